"""Monotonic data revisions that web processes poll to know when to rebuild what they hold in memory."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from recommender_system.storage.tables import DataRevision, utcnow

CATALOG = "catalog"
ORDERS = "orders"
CONFIG = "config"
MODELS = "models"
EVENTS = "events"
ALL = (CATALOG, ORDERS, CONFIG, MODELS, EVENTS)


def bump(session: Session, *names: str) -> None:
    """Increment the named revisions inside the caller's unit of work (creating the rows on first use)."""
    for name in dict.fromkeys(names):
        result = session.execute(
            update(DataRevision)
            .where(DataRevision.name == name)
            .values(revision=DataRevision.revision + 1, updated_at=utcnow())
        )
        if result.rowcount == 0:  # type: ignore[attr-defined]
            session.add(DataRevision(name=name, revision=1, updated_at=utcnow()))
            session.flush()


def read_all(session: Session) -> dict[str, int]:
    """Every revision in one query; missing rows read as 0."""
    found = {
        name: revision for name, revision in session.execute(select(DataRevision.name, DataRevision.revision))
    }
    return {name: int(found.get(name, 0)) for name in ALL}
