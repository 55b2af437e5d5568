"""``HistoryStore.load`` on both backends: one query, ordered views, carts, orders and reviews, user linking, bounds."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import text

from recommender_system.domain import EMPTY_HISTORY
from recommender_system.storage.history import HistoryStore
from tests.factories import T0, add_cart, add_order, add_review, add_session, add_view


def at(minutes: int):  # type: ignore[no-untyped-def]
    return T0 + timedelta(minutes=minutes)


@pytest.fixture
def seeded(database):  # type: ignore[no-untyped-def]
    """Session s1 (anonymous, now) and the user u7's earlier session s0; s9 is someone else's."""
    with database.write_session() as session:
        add_session(session, "s0", user_id="u7")
        add_session(session, "s1")
        add_session(session, "s9", user_id="u9")
        add_view(session, "s0", "old-1", at(1))
        add_view(session, "s0", "old-2", at(2))
        add_view(session, "s1", "x2", at(12))  # inserted before x1 but later in time
        add_view(session, "s1", "x1", at(11))
        add_view(session, "s1", "x1", at(13))  # repeats are kept
        add_view(session, "s9", "other", at(5))
        add_cart(session, "s1", "x1", at(14))
        add_cart(session, "s0", "old-1", at(3))
        add_order(session, "o1", [("old-2", 2), ("old-3", 1)], session_id="s0", created_at=at(4))
        add_order(session, "o2", [("x2", 1)], session_id="s1", created_at=at(15), deleted=True)
        add_review(session, 1, "s0", "old-1", 4, at(6), user_id="u7")
        add_review(session, 2, "s9", "other", 1, at(7), user_id="u9")
    return database


def load(database, session_id, user_id=None, limit=200):  # type: ignore[no-untyped-def]
    store = HistoryStore(database)
    try:
        return store.load(session_id, user_id, limit=limit)
    finally:
        store.close()


@pytest.fixture
def store(seeded):  # type: ignore[no-untyped-def]
    store = HistoryStore(seeded)
    yield store
    store.close()


def test_anonymous_session_sees_only_itself(seeded) -> None:  # type: ignore[no-untyped-def]
    history = load(seeded, "s1")
    assert history.visited == ("x1", "x2", "x1")
    assert history.session_visited == ("x1", "x2", "x1")
    assert history.carted == ("x1",)
    assert history.ordered == ()  # the deleted order does not count
    assert history.rated == ()


def test_a_user_named_by_the_request_brings_the_earlier_sessions(seeded) -> None:  # type: ignore[no-untyped-def]
    history = load(seeded, "s1", user_id="u7")
    assert history.visited == ("old-1", "old-2", "x1", "x2", "x1")
    assert history.session_visited == ("x1", "x2", "x1")
    assert history.carted == ("old-1", "x1")
    assert history.ordered == ("old-2", "old-3")
    assert history.rated == (("old-1", 4.0),)


def test_a_session_linked_to_a_user_brings_that_users_sessions(seeded) -> None:  # type: ignore[no-untyped-def]
    with seeded.write_session() as session:
        add_session(session, "s2", user_id="u7")
        add_view(session, "s2", "new", at(30))
    history = load(seeded, "s2")
    assert history.visited == ("old-1", "old-2", "new")
    assert history.session_visited == ("new",)
    assert history.rated == (("old-1", 4.0),)


def test_user_without_session(seeded) -> None:  # type: ignore[no-untyped-def]
    history = load(seeded, None, user_id="u7")
    assert history.visited == ("old-1", "old-2")
    assert history.session_visited == ()


def test_unknown_and_anonymous(seeded) -> None:  # type: ignore[no-untyped-def]
    assert load(seeded, "nobody") is EMPTY_HISTORY
    assert load(seeded, "nobody", user_id="nobody") is EMPTY_HISTORY
    assert load(seeded, None) is EMPTY_HISTORY


def test_each_kind_is_bounded_to_its_newest_events(seeded) -> None:  # type: ignore[no-untyped-def]
    history = load(seeded, "s1", user_id="u7", limit=2)
    assert history.visited == ("x2", "x1")  # the two newest views
    assert history.carted == ("old-1", "x1")


class CountingConnection:
    """The DBAPI connection of the store's thread, recording every statement its cursors execute."""

    def __init__(self, connection) -> None:  # type: ignore[no-untyped-def]
        self.connection = connection
        self.statements: list[str] = []

    def cursor(self):  # type: ignore[no-untyped-def]
        outer = self
        inner = self.connection.cursor()

        class Cursor:
            def execute(self, sql, *args):  # type: ignore[no-untyped-def]
                outer.statements.append(sql)
                return inner.execute(sql, *args)

            def __getattr__(self, name):  # type: ignore[no-untyped-def]
                return getattr(inner, name)

        return Cursor()

    def close(self) -> None:
        self.connection.close()


def test_one_round_trip_per_load_once_warm(store) -> None:  # type: ignore[no-untyped-def]
    first = store.load("s1", "u7")  # opens this thread's connection (and prepares the statements on PostgreSQL)
    counting = CountingConnection(store._local.held)
    store._local.held = counting
    # every shape is one statement: no BEGIN, COMMIT, pool pre-ping or (on PostgreSQL) re-planning
    for session_id, user_id in [("s1", "u7"), ("s1", None), (None, "u7"), ("s1", "u7")]:
        before = len(counting.statements)
        history = store.load(session_id, user_id)
        assert len(counting.statements) - before == 1
    assert history == first
    if not store._postgresql:
        return
    assert all(statement.startswith("EXECUTE rs_history_") for statement in counting.statements)
    with counting.connection.cursor() as cursor:  # the server holds the three prepared shapes, planned generically
        cursor.execute("SELECT name, generic_plans > 0 FROM pg_prepared_statements ORDER BY name")
        assert cursor.fetchall() == [("rs_history_01", True), ("rs_history_10", True), ("rs_history_11", True)]


def test_the_thread_connection_sees_newly_committed_events(seeded, store) -> None:  # type: ignore[no-untyped-def]
    assert store.load("s1").visited == ("x1", "x2", "x1")
    with seeded.write_session() as session:
        add_view(session, "s1", "fresh", at(40))
    assert store.load("s1").visited == ("x1", "x2", "x1", "fresh")


def test_a_broken_connection_is_replaced(seeded, store) -> None:  # type: ignore[no-untyped-def]
    expected = store.load("s1", "u7")
    connection = store._local.held
    if seeded.is_sqlite:
        connection.close()  # any use now raises sqlite3.ProgrammingError
    else:
        with seeded.engine.connect() as admin:  # the server ends the backend, as a restart would
            pid = connection.get_backend_pid()
            admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    assert store.load("s1", "u7") == expected
    assert store._local.held is not connection


def test_close_closes_every_thread_connection(seeded) -> None:  # type: ignore[no-untyped-def]
    store = HistoryStore(seeded)
    store.load("s1")
    worker = threading.Thread(target=store.load, args=("s1",))
    worker.start()
    worker.join()
    connections = list(store._connections)
    assert len(connections) == 2
    store.close()
    for connection in connections:
        with pytest.raises(Exception):  # noqa: B017 - each driver raises its own "closed" error
            connection.cursor().execute("SELECT 1")
    assert store.load("s1").visited == ("x1", "x2", "x1")  # a later load reconnects
    store.close()


def test_without_prepared_statements_the_same_rows_come_from_one_plain_statement(seeded) -> None:  # type: ignore[no-untyped-def]
    """For PostgreSQL behind a pooler in transaction mode (PgBouncer), where prepared statements do not work."""
    plain, prepared = HistoryStore(seeded, prepared=False), HistoryStore(seeded)
    try:
        for session_id, user_id in [("s1", "u7"), ("s1", None), (None, "u7"), ("nobody", None)]:
            assert plain.load(session_id, user_id) == prepared.load(session_id, user_id)
        counting = CountingConnection(plain._local.held)
        plain._local.held = counting
        plain.load("s1", "u7")
        assert len(counting.statements) == 1 and not counting.statements[0].startswith("EXECUTE")
        if not seeded.is_sqlite:
            with counting.connection.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM pg_prepared_statements")
                assert cursor.fetchone() == (0,)
    finally:
        plain.close()
        prepared.close()


def test_the_setting_turns_preparing_off(settings_env, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from recommender_system.container import Container

    assert Container().history_store()._prepared is True
    monkeypatch.setenv("RS_DATABASE_PREPARED_STATEMENTS", "false")
    container = Container()
    assert container.history_store()._prepared is False
    container.database().dispose()
