from __future__ import annotations

import threading

from recommender_system.storage import revisions
from recommender_system.storage.database import Database


def test_bump_creates_then_increments(database_url: str) -> None:
    database = Database(database_url)
    with database.write_session() as session:
        assert revisions.read_all(session)["catalog"] == 0
        revisions.bump(session, revisions.CATALOG, revisions.CATALOG, revisions.ORDERS)
    with database.write_session() as session:
        revisions.bump(session, revisions.CATALOG)
    with database.session() as session:
        found = revisions.read_all(session)
    assert found["catalog"] == 2  # a name repeated in one call counts once
    assert found["orders"] == 1
    assert found["models"] == 0
    database.dispose()


def test_concurrent_first_bumps_never_collide(database_url: str) -> None:
    database = Database(database_url)
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def bump() -> None:
        try:
            start.wait()
            with database.write_session() as session:
                revisions.bump(session, revisions.EVENTS)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with database.session() as session:
        assert revisions.read_all(session)["events"] == 4
    database.dispose()
