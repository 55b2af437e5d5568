"""Monotonic data revisions that web processes poll to know when to rebuild what they hold in memory."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from recommender_system.storage.tables import DataRevision, utcnow

CATALOG = "catalog"
ORDERS = "orders"
CONFIG = "config"
MODELS = "models"
EVENTS = "events"
ALL = (CATALOG, ORDERS, CONFIG, MODELS, EVENTS)


def bump(session: Session, *names: str) -> None:
    """Increment the named revisions inside the caller's unit of work (creating the rows on first use).

    One ``INSERT ... ON CONFLICT DO UPDATE`` per name, so concurrent first bumps never collide on the key."""
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    now = utcnow()
    for name in dict.fromkeys(names):
        statement = insert(DataRevision).values(name=name, revision=1, updated_at=now)
        statement = statement.on_conflict_do_update(
            index_elements=[DataRevision.name],
            set_={"revision": DataRevision.revision + 1, "updated_at": now},
        )
        session.execute(statement)


def read_all(session: Session) -> dict[str, int]:
    """Every revision in one query; missing rows read as 0."""
    found = {
        name: revision for name, revision in session.execute(select(DataRevision.name, DataRevision.revision))
    }
    return {name: int(found.get(name, 0)) for name in ALL}
