"""Engine and unit-of-work sessions for the one database (SQLite by default, PostgreSQL in production)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker


def make_engine(url: str, **kwargs: object) -> Engine:
    """An engine tuned for the service: WAL and a busy timeout on SQLite, pre-ping and a pool on PostgreSQL."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # type: ignore[no-untyped-def]
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()
            # let SQLAlchemy issue BEGIN itself, so that BEGIN IMMEDIATE can be used for claims
            dbapi_connection.isolation_level = None

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):  # type: ignore[no-untyped-def]
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.info.get("immediate") else "BEGIN")

        return engine
    if "poolclass" not in kwargs:
        kwargs = {"pool_size": 10, "max_overflow": 20, **kwargs}
    return create_engine(url, pool_pre_ping=True, **kwargs)


class Database:
    """Owns the engine and hands out one session per unit of work."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success, rolls back on error and always closes."""
        with _unit_of_work(self._sessions()) as session:
            yield session

    @contextmanager
    def write_session(self) -> Iterator[Session]:
        """Like ``session`` but takes SQLite's write lock up front (``BEGIN IMMEDIATE``), so that two writers never
        deadlock upgrading a read lock. On PostgreSQL it is a plain session."""
        if not self.is_sqlite:
            with self.session() as session:
                yield session
            return
        connection = self.engine.connect()
        connection.info["immediate"] = True
        try:
            with _unit_of_work(Session(bind=connection, expire_on_commit=False)) as session:
                yield session
        finally:
            connection.info.pop("immediate", None)
            connection.close()

    def dispose(self) -> None:
        self.engine.dispose()


@contextmanager
def _unit_of_work(session: Session) -> Iterator[Session]:
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
