"""A policy's database table as a source of rows (traffic, feedback), watched as landing files are.

The sensor side (`database_sensor`) asks the table for its newest primary key, one small query a tick,
and requests one staging run per new range of keys; its cursor is the newest key requested. A
database that fails is the tick's skip reason (password hidden) and is asked again next tick; it
never holds up the landing files, which other sensors watch. The run side (`read_range`) reads one
range and fails the run (Dagster retries it) when the database cannot be reached, password hidden.
"""

import os
from collections.abc import Callable
from typing import TypeVar

import dagster as dg

from governance_assets.defs.resources import GovernanceState
from governance_assets.lib.core.database import DatabaseUnreadable, newest_table_id
from governance_assets.lib.core.policy import DatabaseSource, IntakeSettings, Policy

Batch = TypeVar("Batch")


def database_sensor(
    name: str,
    job: dg.JobDefinition,
    op_name: str,
    run_key_prefix: str,
    what: str,
    setting: str,
    intake: Callable[[Policy], IntakeSettings],
) -> dg.SensorDefinition:
    """A sensor that asks the `intake(policy).database` table for its newest `id` and requests a
    `job` run (its op `op_name` configured with the range, run key
    ``<run_key_prefix>:db-<table>-<first>-<last>``) per new range of `batch_rows` keys, at most
    `max_sources_per_tick` a tick. The cursor is the newest `id` requested so far; `what` names the
    rows in messages, `setting` the policy field."""

    @dg.sensor(
        name=name,
        jobs=[job],
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            f"Asks the policy's {what} table for its newest primary key and requests a {job.name} run per new "
            "range of keys; a failing database is reported here (password hidden) and asked again next tick."
        ),
    )
    def watch(context: dg.SensorEvaluationContext, state: GovernanceState) -> dg.SensorResult:
        settings = intake(state.policy())
        database = settings.database
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
        while after < newest and len(run_requests) < settings.max_sources_per_tick:
            up_to = min(after + database.batch_rows, newest)
            source = {"table": database.table, "after_id": after, "up_to_id": up_to}
            run_requests.append(
                dg.RunRequest(
                    job_name=job.name,
                    run_key=f"{run_key_prefix}:db-{database.table}-{after + 1}-{up_to}",
                    run_config={"ops": {op_name: {"config": source}}},
                )
            )
            after = up_to
        return dg.SensorResult(
            run_requests=run_requests,
            cursor=str(after),
            skip_reason=None if run_requests else f"no new rows in {database.table} (newest id {newest})",
        )

    return watch


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
