"""``HistoryStore.load`` on both backends: one query, ordered views, carts, orders and reviews, user linking, bounds."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import event

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
    with database.session() as session:
        return HistoryStore().load(session, session_id, user_id, limit=limit)


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


def test_exactly_one_query(seeded) -> None:  # type: ignore[no-untyped-def]
    statements: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        statements.append(statement)

    event.listen(seeded.engine, "before_cursor_execute", count)
    try:
        with seeded.session() as session:
            HistoryStore().load(session, "s1", "u7")
    finally:
        event.remove(seeded.engine, "before_cursor_execute", count)
    selects = [s for s in statements if s.lstrip().upper().startswith(("SELECT", "(SELECT", "WITH"))]
    assert len(selects) == 1
