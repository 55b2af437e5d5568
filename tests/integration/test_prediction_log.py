"""The prediction log on both backends: bulk rows and top-10 items, session links, background flushing, retries,
and nothing lost on a clean shutdown."""

from __future__ import annotations

import time
from datetime import timedelta

from sqlalchemy import func, select

from recommender_system.managers.prediction_log import PredictionLogWriter
from recommender_system.storage.prediction_log import PredictionLogStore, PredictionRecord
from recommender_system.storage.tables import PredictionLog, PredictionLogItem, ShopSession
from tests.factories import T0, add_session


def record(n: int, skus: int = 3, session_id: str | None = "s1", user_id: str | None = None) -> PredictionRecord:
    return PredictionRecord(
        created_at=T0 + timedelta(seconds=n),
        recommendation_type="HOMEPAGE",
        session_id=session_id,
        user_id=user_id,
        retrieval_model_name="popularity",
        retrieval_model_identifier="popularity",
        scoring_model_name="ease",
        scoring_model_identifier="ease_v1",
        ordering_model_name=None,
        retrieval_duration=0.001,
        scoring_duration=0.002,
        ordering_duration=0.0,
        skus=tuple(f"r{n}-{k}" for k in range(skus)),
    )


def count(database, table) -> int:  # type: ignore[no-untyped-def]
    with database.session() as session:
        return int(session.scalar(select(func.count()).select_from(table)))


def test_bulk_insert_keeps_order_top_ten_and_a_bounded_list(database) -> None:  # type: ignore[no-untyped-def]
    records = [record(0, skus=3), record(1, skus=250), record(2, skus=0, session_id=None)]
    with database.write_session() as session:
        ids = PredictionLogStore().insert_many(session, records)
    assert len(ids) == 3 and ids == sorted(ids)
    with database.session() as session:
        rows = {row.id: row for row in session.scalars(select(PredictionLog))}
        items = session.execute(
            select(PredictionLogItem.prediction_id, PredictionLogItem.position, PredictionLogItem.product_variant_sku)
            .order_by(PredictionLogItem.prediction_id, PredictionLogItem.position)
        ).all()
    first, long, empty = (rows[i] for i in ids)
    assert first.predicted_items == ["r0-0", "r0-1", "r0-2"] and first.returned_count == 3
    assert first.scoring_model_identifier == "ease_v1" and first.retrieval_model_name == "popularity"
    assert long.returned_count == 250 and len(long.predicted_items) == 200
    assert empty.session_id is None and empty.predicted_items == []
    assert [(p, s) for i, p, s in items if i == ids[0]] == [(0, "r0-0"), (1, "r0-1"), (2, "r0-2")]
    assert [p for i, p, _ in items if i == ids[1]] == list(range(10))


def test_sessions_are_linked_to_the_users_that_requests_name(database) -> None:  # type: ignore[no-untyped-def]
    with database.write_session() as session:
        add_session(session, "known", user_id=None)
    writer = PredictionLogWriter(database, PredictionLogStore())
    writer.submit(record(0, session_id="known", user_id="u1"))
    writer.submit(record(1, session_id="fresh", user_id="u2"))
    writer.submit(record(2, session_id="fresh", user_id="u3"))  # a later login wins
    writer.submit(record(3, session_id="anon"))  # no user: no link
    assert writer.flush()
    with database.session() as session:
        links = dict(session.execute(select(ShopSession.id, ShopSession.user_id)).all())
    assert links == {"known": "u1", "fresh": "u3"}


def test_background_thread_flushes_without_being_asked(database) -> None:  # type: ignore[no-untyped-def]
    writer = PredictionLogWriter(database, PredictionLogStore(), flush_seconds=0.05)
    writer.start()
    try:
        for n in range(5):
            writer.submit(record(n))
        deadline = time.monotonic() + 10
        while count(database, PredictionLog) < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert count(database, PredictionLog) == 5
    finally:
        writer.close()


def test_close_writes_everything_still_queued(database) -> None:  # type: ignore[no-untyped-def]
    writer = PredictionLogWriter(database, PredictionLogStore(), flush_seconds=3600)
    writer.start()
    for n in range(1200):  # more than a batch: the thread wakes early, close writes the rest
        writer.submit(record(n))
    writer.close()
    assert writer.pending == 0
    assert count(database, PredictionLog) == 1200
    assert count(database, PredictionLogItem) == 3600
    writer.close()  # idempotent


class FlakyStore(PredictionLogStore):
    """Fails its first write, as a briefly unreachable database would."""

    def __init__(self) -> None:
        self.failures = 1

    def insert_many(self, session, records):  # type: ignore[no-untyped-def]
        if self.failures:
            self.failures -= 1
            raise ConnectionError("database unreachable")
        return super().insert_many(session, records)


def test_a_failed_write_is_retried_not_lost(database) -> None:  # type: ignore[no-untyped-def]
    writer = PredictionLogWriter(database, FlakyStore())
    writer.submit(record(0))
    writer.submit(record(1))
    assert writer.flush() is False
    assert writer.pending == 2
    writer.submit(record(2))
    assert writer.flush() is True
    with database.session() as session:
        stamps = session.scalars(select(PredictionLog.created_at).order_by(PredictionLog.id)).all()
    assert stamps == [T0, T0 + timedelta(seconds=1), T0 + timedelta(seconds=2)]  # order kept across the retry


def test_pending_is_bounded_while_the_database_is_down(database) -> None:  # type: ignore[no-untyped-def]
    store = FlakyStore()
    store.failures = 10
    writer = PredictionLogWriter(database, store, max_pending=3)
    for n in range(5):
        writer.submit(record(n))
    assert writer.flush() is False
    assert writer.pending == 3 and writer.dropped == 2


class IntegrityError(Exception):
    """Named as the DB-API exception a driver raises when it refuses a row."""


class PickyStore(PredictionLogStore):
    """Refuses any batch holding the session "poison", as a database refuses a row breaking a constraint."""

    def insert_many(self, session, records):  # type: ignore[no-untyped-def]
        if any(r.session_id == "poison" for r in records):
            raise IntegrityError("refused")
        return super().insert_many(session, records)


def test_a_refused_record_is_dropped_alone(database) -> None:  # type: ignore[no-untyped-def]
    writer = PredictionLogWriter(database, PickyStore())
    for n, session_id in enumerate(["a", "poison", "b"]):
        writer.submit(record(n, session_id=session_id))
    assert writer.flush() is True
    assert writer.dropped == 1 and writer.pending == 0
    with database.session() as session:
        assert sorted(session.scalars(select(PredictionLog.session_id))) == ["a", "b"]


def test_database_refusal_of_an_overlong_value_is_isolated(database) -> None:  # type: ignore[no-untyped-def]
    writer = PredictionLogWriter(database, PredictionLogStore())
    writer.submit(record(0, session_id="ok"))
    writer.submit(record(1, session_id="x" * 500))  # wider than the column: PostgreSQL refuses it
    assert writer.flush() is True
    with database.session() as session:
        stored = sorted(session.scalars(select(PredictionLog.session_id)))
    assert "ok" in stored
    assert len(stored) == (1 if database.engine.dialect.name == "postgresql" else 2)
