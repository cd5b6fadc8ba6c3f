"""A policy's database table as a source of rows (traffic, feedback), watched as landing files are.

The sensor side (`database_tick`) asks the table for its newest primary key, one small query a tick,
and requests one staging run per new range of keys; its cursor is the newest key requested. A
database that fails is the tick's skip reason (password hidden) and is asked again next tick; it
never holds up the landing files, which other sensors watch. The run side (`read_range`) reads one
range and fails the run (Dagster retries it) when the database cannot be reached, password hidden.
"""

import os
from collections.abc import Callable
from typing import TypeVar

import dagster as dg

from governance_assets.lib.core.database import DatabaseUnreadable, newest_table_id
from governance_assets.lib.core.policy import DatabaseSource

Batch = TypeVar("Batch")
SourceConfig = dict[str, str | int]
"""A staging run's config for one range: `table`, `after_id`, `up_to_id`."""


def database_tick(
    context: dg.SensorEvaluationContext,
    database: DatabaseSource | None,
    what: str,
    setting: str,
    budget: int,
    request: Callable[[int, int, SourceConfig], dg.RunRequest],
) -> dg.SensorResult:
    """Request `request(first id, last id, config)` for each new range of `database.batch_rows` keys
    (at most `budget` a tick); `what` names the rows in messages, `setting` the policy field."""
    if database is None:
        return dg.SensorResult(skip_reason=f"the policy names no {what} database ({setting})")
    url = os.environ.get(database.url_env)
    if not url:
        return dg.SensorResult(skip_reason=f"{what} table {database.table}: {database.url_env} is not set")
    try:
        newest = newest_table_id(url, database.table)
    except DatabaseUnreadable as error:
        context.log.warning(f"{what} database unreadable, asked again next tick: {error}")
        return dg.SensorResult(skip_reason=f"{what} database unreadable, asked again next tick: {error}")
    after = int(context.cursor or 0)
    run_requests: list[dg.RunRequest] = []
    while after < newest and len(run_requests) < budget:
        up_to = min(after + database.batch_rows, newest)
        run_requests.append(request(after + 1, up_to, {"table": database.table, "after_id": after, "up_to_id": up_to}))
        after = up_to
    return dg.SensorResult(
        run_requests=run_requests,
        cursor=str(after),
        skip_reason=None if run_requests else f"no new rows in {database.table} (newest id {newest})",
    )


def read_range(
    database: DatabaseSource | None,
    what: str,
    table: str,
    after_id: int,
    up_to_id: int,
    read: Callable[[str, str, int, int], Batch],
) -> Batch:
    """`read(url, table, after_id, up_to_id)` in a staging run, for the policy's table only; a
    database that cannot be reached fails the run (to be retried) with the password hidden."""
    if database is None or database.table != table:
        raise dg.Failure(description=f"table {table!r} is not the policy's {what} database table")
    url = os.environ.get(database.url_env)
    if not url:
        raise dg.Failure(description=f"{what} table {database.table}: {database.url_env} is not set")
    try:
        return read(url, table, after_id, up_to_id)
    except DatabaseUnreadable as error:
        raise dg.Failure(description=f"{what} database unreadable (retried): {error}") from None
