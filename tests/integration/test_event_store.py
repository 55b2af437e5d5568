"""EventStore on SQLite and PostgreSQL: events appended in order and linked to sessions (and users), reviews
upserted by id, orders upserted by token with their lines replaced."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select

from recommender_system.api.schemas import ingest
from recommender_system.storage.events import EventStore
from recommender_system.storage.tables import (
    OrderLine,
    ProductAddToCart,
    ProductDetailEnter,
    ProductDetailLeave,
    RecommendationView,
    Review,
    ShopOrder,
    ShopSession,
)

NOW = datetime(2024, 5, 1, 12, 0, 0)
LATER = datetime(2024, 5, 1, 13, 0, 0)
TOKEN = "95029f63-2a51-48b3-9028-ca77b76051d4"

store = EventStore()


def enter(session_id: str, sku: str, **extra) -> ingest.ProductDetailEnterIn:  # type: ignore[no-untyped-def]
    body = {"session_id": session_id, "product_id": 1, "product_variant_sku": sku}
    return ingest.ProductDetailEnterIn.model_validate({**body, **extra})


def order(token: str, lines: list, **extra) -> ingest.OrderIn:  # type: ignore[no-untyped-def]
    return ingest.OrderIn.model_validate({"token": token, "session_id": "s1", "product_variants": lines, **extra})


def review(rid: int, rating: int, **extra) -> ingest.ReviewIn:  # type: ignore[no-untyped-def]
    body = {"id": rid, "session_id": "s1", "user_id": 7, "product_id": 1, "product_variant_sku": "a", "rating": rating}
    return ingest.ReviewIn.model_validate({**body, **extra})


def sessions(database) -> dict[str, tuple]:  # type: ignore[no-untyped-def,type-arg]
    with database.session() as session:
        return {s.id: (s.user_id, s.created_at) for s in session.scalars(select(ShopSession))}


def test_every_event_class_is_appended_with_its_fields(database) -> None:
    base = {"session_id": "s1", "product_id": 4, "product_variant_sku": "4-en"}
    with database.write_session() as session:
        store.append_events(
            session,
            "ProductDetailEnter",
            [
                ingest.ProductDetailEnterIn.model_validate(
                    {
                        **base,
                        "recommendation_type": "HOMEPAGE",
                        "model_name": "ease",
                        "model_identifier": "ease_1",
                        "position": 2,
                    }
                )
            ],
            NOW,
        )
        store.append_events(
            session,
            "ProductDetailLeave",
            [ingest.ProductDetailLeaveIn.model_validate({**base, "time_spent": 12.5})],
            NOW,
        )
        store.append_events(session, "ProductAddToCart", [ingest.ProductAddToCartIn.model_validate(base)], NOW)
        store.append_events(
            session,
            "RecommendationView",
            [
                ingest.RecommendationViewIn.model_validate(
                    {**base, "recommendation_type": "CART", "model_identifier": "x", "position": 0}
                )
            ],
            NOW,
        )
    with database.session() as session:
        e = session.scalars(select(ProductDetailEnter)).one()
        assert (e.session_id, e.product_id, e.product_variant_sku, e.recommendation_type) == (
            "s1",
            4,
            "4-en",
            "HOMEPAGE",
        )
        assert (e.model_name, e.model_identifier, e.position, e.created_at) == ("ease", "ease_1", 2, NOW)
        assert session.scalar(select(ProductDetailLeave.time_spent)) == 12.5
        assert session.scalar(select(ProductAddToCart.product_variant_sku)) == "4-en"
        view = session.scalars(select(RecommendationView)).one()
        assert (view.recommendation_type, view.model_identifier, view.position) == ("CART", "x", 0)
    assert sessions(database) == {"s1": (None, NOW)}


def test_events_are_appended_in_order_and_never_merged(database) -> None:
    with database.write_session() as session:
        store.append_events(session, "ProductDetailEnter", [enter("s1", "a"), enter("s1", "b"), enter("s1", "a")], NOW)
    with database.write_session() as session:
        store.append_events(session, "ProductDetailEnter", [enter("s1", "c")], LATER)
    with database.session() as session:
        rows = list(
            session.execute(
                select(ProductDetailEnter.product_variant_sku, ProductDetailEnter.created_at).order_by(
                    ProductDetailEnter.id
                )
            )
        )
    assert rows == [("a", NOW), ("b", NOW), ("a", NOW), ("c", LATER)]


def test_sessions_are_created_once_and_linked_to_the_user_named_last(database) -> None:
    early = datetime(2024, 1, 1)
    with database.write_session() as session:
        store.append_events(
            session,
            "ProductDetailEnter",
            [enter("s1", "a"), enter("s2", "a", user_id=5), enter("s1", "b", create_at=early)],
            NOW,
        )
    assert sessions(database) == {"s1": (None, early), "s2": ("5", NOW)}
    with database.write_session() as session:  # a later event names a user for s1; s2 gets a new user
        store.append_events(
            session,
            "ProductAddToCart",
            [
                ingest.ProductAddToCartIn.model_validate(
                    {"session_id": "s1", "user_id": "alice@example.com", "product_id": 1, "product_variant_sku": "a"}
                )
            ],
            LATER,
        )
        store.append_events(session, "ProductDetailEnter", [enter("s2", "c", user_id="6"), enter("s2", "d")], LATER)
    assert sessions(database) == {"s1": ("alice@example.com", early), "s2": ("6", NOW)}
    with database.session() as session:
        users = list(session.scalars(select(ProductDetailEnter.user_id).order_by(ProductDetailEnter.id)))
    assert users == [None, "5", None, "6", None]


def test_deleted_events_are_not_stored(database) -> None:
    with database.write_session() as session:
        store.append_events(session, "ProductDetailEnter", [enter("s1", "a", deleted=True), enter("s1", "b")], NOW)
    with database.session() as session:
        assert list(session.scalars(select(ProductDetailEnter.product_variant_sku))) == ["b"]


def test_order_re_send_replaces_lines_and_keeps_created_at(database) -> None:
    created = datetime(2023, 7, 18, 1, 12, 7)
    with database.write_session() as session:
        store.upsert_orders(session, [order(TOKEN, [["a", 1], ["b", 2]], create_at=created)], NOW)
    with database.write_session() as session:
        store.upsert_orders(session, [order(TOKEN.upper(), [["b", 3]], user_id=9)], LATER)
    with database.write_session() as session:  # exactly the same order again: nothing is duplicated
        store.upsert_orders(session, [order(TOKEN, [["b", 3]], user_id=9)], LATER)
    with database.session() as session:
        row = session.scalars(select(ShopOrder)).one()
        lines = list(session.execute(select(OrderLine.order_token, OrderLine.product_variant_sku, OrderLine.quantity)))
    assert (row.token, row.session_id, row.user_id, row.created_at, row.updated_at) == (
        TOKEN,
        "s1",
        "9",
        created,
        LATER,
    )
    assert lines == [(TOKEN, "b", 3)]
    assert sessions(database)["s1"][0] == "9"


def test_orders_in_one_batch_keep_their_own_lines(database) -> None:
    other = "03d77cd8-e3ff-46ca-b086-41cf79205d31"
    with database.write_session() as session:
        store.upsert_orders(session, [order(TOKEN, [["a", 1]]), order(other, [["c", 2], ["c", 1]], deleted=True)], NOW)
    with database.session() as session:
        lines = sorted(
            session.execute(
                select(OrderLine.order_token, OrderLine.line_number, OrderLine.product_variant_sku, OrderLine.quantity)
            )
        )
        deleted = dict(session.execute(select(ShopOrder.token, ShopOrder.deleted)).all())
    assert lines == sorted([(TOKEN, 0, "a", 1), (other, 0, "c", 2), (other, 1, "c", 1)])
    assert deleted == {TOKEN: False, other: True}


def test_review_re_send_updates_it_and_deleted_removes_it(database) -> None:
    with database.write_session() as session:
        store.upsert_reviews(session, [review(1, 3), review(2, 5, session_id="s2", user_id=None)], NOW)
    with database.write_session() as session:
        store.upsert_reviews(session, [review(1, 4), review(1, 2)], LATER)  # re-sent twice: the last one wins
    with database.session() as session:
        rows = {r.id: (r.rating, r.user_id, r.created_at, r.updated_at) for r in session.scalars(select(Review))}
    assert rows == {1: (2, "7", NOW, LATER), 2: (5, None, NOW, NOW)}
    assert sessions(database) == {"s1": ("7", NOW), "s2": (None, NOW)}
    with database.write_session() as session:
        store.upsert_reviews(session, [review(2, 5, deleted=True)], LATER)
    with database.session() as session:
        assert session.scalar(select(func.count()).select_from(Review)) == 1


def test_many_sessions_in_one_batch(database) -> None:
    items = [enter(f"session-{i % 300}", f"sku-{i}", user_id=i % 300 if i % 2 else None) for i in range(1500)]
    with database.write_session() as session:
        store.append_events(session, "ProductDetailEnter", items, NOW)
    with database.session() as session:
        assert session.scalar(select(func.count()).select_from(ProductDetailEnter)) == 1500
        assert session.scalar(select(func.count()).select_from(ShopSession)) == 300
        assert (
            session.scalar(select(func.count()).select_from(ShopSession).where(ShopSession.user_id.is_not(None))) == 150
        )


def test_awkward_strings_survive_the_bulk_path(database) -> None:
    skus = ["tab\there", "new\nline", "back\\slash", "quote'\"", "\\N", "žluťoučký kůň", "cr\rlf", ""]
    with database.write_session() as session:
        store.append_events(session, "ProductDetailEnter", [enter(f"s-{sku}", sku, user_id=sku) for sku in skus], NOW)
    with database.session() as session:
        rows = session.execute(select(ProductDetailEnter.session_id, ProductDetailEnter.product_variant_sku))
        assert sorted(rows) == sorted((f"s-{sku}", sku) for sku in skus)
    assert sessions(database) == {f"s-{sku}": (sku, NOW) for sku in skus}


def test_small_and_large_batches_store_identical_timestamps(database) -> None:
    """Small batches take SQLAlchemy's path, large ones the bulk path: the stored values must compare equal."""
    stamp = datetime(2024, 5, 1, 12, 0, 0, 123456)
    with database.write_session() as session:
        store.append_events(session, "ProductDetailEnter", [enter("s1", "small", create_at=stamp)], NOW)
        store.append_events(
            session, "ProductDetailEnter", [enter(f"s{i}", "large", create_at=stamp) for i in range(60)], NOW
        )
        store.append_events(session, "ProductDetailEnter", [enter(f"t{i}", "round") for i in range(60)], NOW)
    with database.session() as session:
        at_stamp = select(func.count()).select_from(ProductDetailEnter).where(ProductDetailEnter.created_at == stamp)
        assert session.scalar(at_stamp) == 61
        later = select(func.count()).select_from(ProductDetailEnter).where(ProductDetailEnter.created_at > stamp)
        assert session.scalar(later) == 0
        assert session.scalar(select(func.count()).select_from(ShopSession).where(ShopSession.created_at == NOW)) == 60
        assert set(
            session.scalars(
                select(ProductDetailEnter.created_at).where(ProductDetailEnter.product_variant_sku == "round")
            )
        ) == {NOW}
