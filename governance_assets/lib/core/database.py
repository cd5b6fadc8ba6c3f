"""Reading an append-only database table (integer primary key `id`) in ranges of keys, once each.

A serving system may write traffic or feedback as rows of a table named by the policy, reached by a
SQLAlchemy URL held in an environment variable. A sensor asks for the newest `id` (one small query a
tick) and requests a run per new range of keys; the run reads that range (`read_id_range`). The URL
may carry a password: every message shows it hidden (`hidden_url`). A database that cannot be
reached raises `DatabaseUnreadable`, to be asked again later; a table that lacks `id` or does not
exist is a whole-range error in the result (the rows cannot be read until the table is fixed).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from governance_assets.lib.core.storage import safe_component

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


class DatabaseUnreadable(Exception):
    """The database could not be reached or read; the message never holds the URL's password."""


@dataclass(frozen=True)
class TableRows:
    """The rows of one range of keys, in `id` order, without `id` (kept apart in `ids`)."""

    source: str
    """The URL (password hidden) and table, ``<url>#<table>``."""
    columns: list[str]
    """The table's columns other than `id`."""
    ids: list[int] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    """Set (with no rows) when the table cannot be read as a table of rows: missing, or no `id`."""


def hidden_url(url: str) -> str:
    """`url` with its password shown as ``***`` (a placeholder when it is not a URL)."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "(not a SQLAlchemy URL)"


def _secret_free(url: str, error: BaseException) -> str:
    """The first line of an error, with the URL and its password replaced by their hidden form."""
    text = f"{type(error).__name__}: {error}".splitlines()[0]
    text = text.replace(url, hidden_url(url))
    try:
        password = sa.engine.make_url(url).password
    except sa.exc.ArgumentError:
        password = None
    return text.replace(str(password), "***") if password else text


def _engine(url: str, table: str) -> sa.Engine:
    if not _IDENTIFIER.fullmatch(table):
        raise ValueError(f"table name {table!r} is not a plain SQL identifier")
    try:
        return sa.create_engine(url)
    except (sa.exc.SQLAlchemyError, ValueError, ImportError) as error:  # bad dialect, missing driver, bad URL
        raise DatabaseUnreadable(f"{hidden_url(url)}: {_secret_free(url, error)}") from None


def newest_table_id(url: str, table: str) -> int:
    """The largest primary key `id` of database `table` (0 when it is empty): one small query.

    Raises DatabaseUnreadable (password hidden) when the database cannot be reached or read, and
    ValueError when the table name is not a plain identifier."""
    engine = _engine(url, table)
    try:
        with engine.connect() as connection:
            newest = connection.execute(sa.select(sa.func.max(sa.column("id"))).select_from(sa.table(table))).scalar()
    except (sa.exc.SQLAlchemyError, ImportError) as error:
        raise DatabaseUnreadable(f"{hidden_url(url)}#{table}: {_secret_free(url, error)}") from None
    finally:
        engine.dispose()
    return int(newest or 0)


def read_id_range(url: str, table: str, after_id: int, up_to_id: int) -> TableRows:
    """Rows of database `table` whose integer primary key `id` is in (`after_id`, `up_to_id`], by `id`.

    Raises DatabaseUnreadable (password hidden) when the database cannot be reached, and ValueError
    when the table name is not a plain identifier; values are bound parameters."""
    engine = _engine(url, table)
    source = f"{hidden_url(url)}#{table}"
    try:
        reflected = sa.Table(table, sa.MetaData(), autoload_with=engine)
        columns = [c.name for c in reflected.columns if c.name != "id"]
        if "id" not in reflected.columns:
            return TableRows(source, columns, error="no primary key column 'id'")
        query = (
            sa.select(reflected)
            .where(reflected.c.id > sa.bindparam("after_id", after_id, type_=sa.Integer))
            .where(reflected.c.id <= sa.bindparam("up_to_id", up_to_id, type_=sa.Integer))
            .order_by(reflected.c.id)
        )
        with engine.connect() as connection:
            records = [dict(r._mapping) for r in connection.execute(query)]
    except sa.exc.NoSuchTableError:
        return TableRows(source, [], error=f"no table {table!r}")
    except (sa.exc.SQLAlchemyError, ImportError) as error:
        raise DatabaseUnreadable(f"{source}: {_secret_free(url, error)}") from None
    finally:
        engine.dispose()
    ids = [int(record.pop("id")) for record in records]
    return TableRows(source, columns, ids, records)


def database_source_id(table: str, first_id: int, last_id: int) -> str:
    """`db-<table>-<first id>-<last id>` for a staged batch of primary keys."""
    return safe_component(f"db-{table}-{first_id}-{last_id}", "source id")
