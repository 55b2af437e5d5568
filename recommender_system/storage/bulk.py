"""Bulk write helpers shared by the stores: one statement per table and batch, on SQLite and PostgreSQL.

- SQLite: an ``executemany`` of one prepared statement (``INSERT``, ``INSERT ... ON CONFLICT``).
- PostgreSQL: plain inserts go through ``COPY ... FROM STDIN`` (no SQL to parse per row); upserts are one
  ``INSERT ... SELECT FROM unnest(<one array per column>) ON CONFLICT ...`` statement, whatever the row count.

Keys are de-duplicated first (the last row of a key wins): one statement must not touch the same row twice.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import Table, bindparam, cast, delete, func, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

Row = dict[str, Any]

COPY_MIN_ROWS = 2
"""Fewer rows than this are inserted with a plain statement (COPY's protocol costs a little more for one row)."""


def is_postgresql(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def asynchronous_commit(session: Session) -> None:
    """Let this transaction's commit return before its WAL record is flushed to disk (PostgreSQL
    ``synchronous_commit = off``, for this transaction only). A crash may lose the last few hundred milliseconds of
    such commits, never consistency. Meant for clickstream events; a no-op on SQLite (whose WAL mode with
    ``synchronous=NORMAL`` already commits without a flush)."""
    if is_postgresql(session):
        session.execute(text("SET LOCAL synchronous_commit TO OFF"))


def _unnest_insert(table: Table, columns: Sequence[str]) -> Any:
    """``INSERT INTO table (columns) SELECT * FROM unnest(:p0::type[], :p1::type[], ...)`` (PostgreSQL)."""
    arrays = [cast(bindparam(f"p{i}"), postgresql.ARRAY(table.c[c].type)) for i, c in enumerate(columns)]
    source = func.unnest(*arrays).table_valued(*columns).render_derived()
    return postgresql.insert(table).from_select(
        list(columns), select(*(source.c[c] for c in columns)), include_defaults=False
    )


def _unnest_params(rows: Sequence[Row], columns: Sequence[str]) -> dict[str, list[Any]]:
    params = {}
    for i, column in enumerate(columns):
        values = [row[column] for row in rows]
        if any(isinstance(value, datetime) for value in values):
            # ISO text is cast to timestamp[] by the server; psycopg2 adapts datetime objects far more slowly
            values = _iso_timestamps(values)
        params[f"p{i}"] = values
    return params


_COPY_SPECIAL = re.compile(r"[\\\t\n\r]")
_COPY_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _copy_text(value: str) -> str:
    if _COPY_SPECIAL.search(value) is None:
        return value
    return _COPY_SPECIAL.sub(lambda match: _COPY_ESCAPES[match.group()], value)


_COPY_FORMATS: dict[type, Callable[[Any], str]] = {
    str: _copy_text,
    int: repr,
    float: repr,
    bool: lambda value: "t" if value else "f",
    type(None): lambda _: "\\N",
    datetime: lambda value: value.isoformat(sep=" "),
    date: lambda value: value.isoformat(),
    dict: lambda value: _copy_text(json.dumps(value)),
    list: lambda value: _copy_text(json.dumps(value)),
}


def _copy_value(value: Any) -> str:
    """A value in COPY's text format: ``\\N`` for NULL, backslash escapes for tab, newline, CR and backslash."""
    format_value = _COPY_FORMATS.get(type(value))
    return format_value(value) if format_value is not None else _copy_text(str(value))


def _copy_column(values: list[Any]) -> list[str]:
    """One column in COPY's text format, with fast paths for the usual all-text, all-null, all-number or
    all-timestamp columns."""
    kinds = set(map(type, values))
    kinds.discard(type(None))
    has_null = len(kinds) < len(set(map(type, values)))
    if not kinds:
        return ["\\N"] * len(values)
    if kinds == {str}:
        if not has_null and _COPY_SPECIAL.search("".join(values)) is None:
            return values
        return [_copy_value(value) for value in values]
    if kinds <= {int, float}:
        return [("\\N" if value is None else repr(value)) for value in values]
    if kinds == {datetime}:
        return [("\\N" if value is None else value) for value in _iso_timestamps(values)]
    return [_copy_value(value) for value in values]


def _iso_timestamps(values: list[Any], timespec: str = "auto") -> list[Any]:
    """Datetimes as ISO text (each distinct value formatted once: a batch usually shares its arrival time)."""
    seen: dict[datetime, str] = {}
    out = []
    for value in values:
        if isinstance(value, datetime):
            formatted = seen.get(value)
            if formatted is None:
                formatted = seen[value] = value.isoformat(sep=" ", timespec=timespec)
            value = formatted
        out.append(value)
    return out


def _copy(session: Session, table: Table, rows: Sequence[Row]) -> None:
    """``COPY table (columns) FROM STDIN`` in the session's transaction (PostgreSQL, psycopg2)."""
    columns = list(rows[0])
    formatted = [_copy_column([row[c] for row in rows]) for c in columns]
    buffer = io.StringIO("\n".join(map("\t".join, zip(*formatted, strict=True))) + "\n")
    preparer = session.get_bind().dialect.identifier_preparer
    sql = f"COPY {preparer.format_table(table)} ({', '.join(preparer.quote(c) for c in columns)}) FROM STDIN"
    cursor = session.connection().connection.cursor()
    try:
        cursor.copy_expert(sql, buffer)
    finally:
        cursor.close()


RAW_SQLITE_MIN_ROWS = 20
"""From this many rows on, SQLite statements run on the raw DB-API cursor (SQLAlchemy's per-row parameter
processing would cost more than the insert itself); fewer rows take SQLAlchemy's cached path."""


def _sqlite_executemany(session: Session, statement: Any, rows: Sequence[Row]) -> None:
    """``executemany`` of a SQLite statement on the unit of work's DB-API connection, with values converted as
    SQLAlchemy would store them (timestamps as ``YYYY-MM-DD HH:MM:SS.ffffff`` text, JSON as text)."""
    columns = list(rows[0])
    if len(rows) < RAW_SQLITE_MIN_ROWS:
        session.execute(statement, list(rows))
        return
    compiled = statement.compile(dialect=session.get_bind().dialect, column_keys=columns)
    names = list(compiled.positiontup or ())
    if not set(names) <= set(columns):  # a column default SQLAlchemy would compute: let it
        session.execute(statement, list(rows))
        return
    values = []
    for name in names:
        column = [row[name] for row in rows]
        kinds = set(map(type, column))
        if datetime in kinds:
            column = _iso_timestamps(column, timespec="microseconds")  # SQLAlchemy's SQLite storage format
        elif date in kinds or dict in kinds or list in kinds:
            column = [
                value.isoformat()
                if isinstance(value, date)
                else json.dumps(value)
                if isinstance(value, (dict, list))
                else value
                for value in column
            ]
        values.append(column)
    cursor = session.connection().connection.cursor()
    try:
        cursor.executemany(str(compiled), list(zip(*values, strict=True)))
    finally:
        cursor.close()


def last_per_key(rows: Iterable[Row], key: Sequence[str]) -> list[Row]:
    """One row per key (the last one wins, as if the rows were applied in order), sorted by key so that concurrent
    writers lock rows in the same order. A statement must not touch a row twice (PostgreSQL refuses it)."""
    by_key: dict[tuple[Any, ...], Row] = {}
    for row in rows:
        by_key[tuple(row[k] for k in key)] = row
    return [by_key[k] for k in sorted(by_key)]


def insert(session: Session, table: Table, rows: Sequence[Row]) -> None:
    """Append rows (every row has the same keys)."""
    if not rows:
        return
    if not is_postgresql(session):
        _sqlite_executemany(session, table.insert(), rows)
    elif len(rows) >= COPY_MIN_ROWS:
        _copy(session, table, rows)
    else:
        session.execute(table.insert(), list(rows))


def insert_ignore(session: Session, table: Table, rows: Sequence[Row], key: Sequence[str]) -> None:
    """Insert the rows whose key is not stored yet (``ON CONFLICT DO NOTHING``)."""
    if not rows:
        return
    rows = last_per_key(rows, key)
    if is_postgresql(session):
        columns = list(rows[0])
        statement = _unnest_insert(table, columns).on_conflict_do_nothing(index_elements=list(key))
        session.execute(statement, _unnest_params(rows, columns))
    else:
        _sqlite_executemany(session, sqlite.insert(table).on_conflict_do_nothing(index_elements=list(key)), rows)


def upsert(
    session: Session,
    table: Table,
    rows: Sequence[Row],
    key: Sequence[str],
    *,
    keep_when_missing: Mapping[str, Any] | None = None,
    update_columns: Sequence[str] | None = None,
    update_where: Callable[[Any], Any] | None = None,
) -> None:
    """Insert or update by ``key`` (the last row of a key wins), setting every non-key column on conflict.

    ``keep_when_missing`` maps a column to the value it gets on insert when a row leaves it ``None``; such a row
    keeps the stored value on update (e.g. ``created_at`` stamped at first arrival, never overwritten by a later
    send that has no timestamp). ``update_columns`` limits what an update sets; ``update_where(excluded)`` returns
    a condition under which a conflicting row is updated at all.
    """
    if not rows:
        return
    rows = last_per_key(rows, key)
    keep = dict(keep_when_missing or {})
    groups: dict[tuple[str, ...], list[Row]] = {}
    for row in rows:
        missing = tuple(column for column in keep if row.get(column) is None)
        if missing:
            row = {**row, **{column: keep[column] for column in missing}}
        groups.setdefault(missing, []).append(row)
    pg = is_postgresql(session)
    for missing, group in groups.items():
        columns = list(group[0])
        statement = _unnest_insert(table, columns) if pg else sqlite.insert(table)
        updated = [c for c in (update_columns or columns) if c not in key and c not in missing]
        if updated:
            statement = statement.on_conflict_do_update(
                index_elements=list(key),
                set_={column: statement.excluded[column] for column in updated},
                where=None if update_where is None else update_where(statement.excluded),
            )
        else:
            statement = statement.on_conflict_do_nothing(index_elements=list(key))
        if pg:
            session.execute(statement, _unnest_params(group, columns))
        else:
            _sqlite_executemany(session, statement, group)


def delete_where_in(session: Session, table: Table, column: str, values: Iterable[Any], chunk: int = 5000) -> None:
    """``DELETE FROM table WHERE column IN (...)``, in chunks that stay under the drivers' parameter limits."""
    values = sorted(set(values))
    for start in range(0, len(values), chunk):
        session.execute(delete(table).where(table.c[column].in_(values[start : start + chunk])))
