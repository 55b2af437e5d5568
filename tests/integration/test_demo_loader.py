"""The bundled ecoseller demo data loads through the ingest path with the expected counts (SQLite and PostgreSQL)."""

from __future__ import annotations

import gzip
import shutil

import pytest
from sqlalchemy import func, select, text

from recommender_system.demo.loader import DEMO_DIR, load_demo, load_objects, read_demo
from recommender_system.managers.data import InvalidObject
from recommender_system.storage import revisions
from recommender_system.storage.events import EventStore
from recommender_system.storage.tables import (
    Attribute,
    AttributeType,
    Category,
    CategoryAncestor,
    OrderLine,
    Product,
    ProductDetailEnter,
    ProductPrice,
    ProductProductVariant,
    ProductType,
    ProductTypeAttributeType,
    ProductVariant,
    Review,
    ShopOrder,
    ShopSession,
    VariantAttribute,
)

EXPECTED_ROWS = {
    AttributeType: 5,
    Attribute: 53,
    ProductType: 3,
    ProductTypeAttributeType: 6,
    Category: 4,
    CategoryAncestor: 7,
    ProductVariant: 2188,
    VariantAttribute: 10940,
    Product: 1470,
    ProductProductVariant: 2188,
    ProductPrice: 6564,
    ShopOrder: 581,
    OrderLine: 581,
    ProductDetailEnter: 14986,
    Review: 10046,
    ShopSession: 581,
}


@pytest.fixture(scope="module")
def bundled_objects() -> list[dict]:  # type: ignore[type-arg]
    """The bundled dumps, parsed once for this module."""
    return read_demo()


def row_counts(database) -> dict[str, int]:  # type: ignore[no-untyped-def]
    with database.session() as session:
        return {t.__tablename__: session.scalar(select(func.count()).select_from(t)) for t in EXPECTED_ROWS}


def test_demo_data_loads_with_the_expected_counts(container, database, bundled_objects) -> None:
    loaded = load_objects(container, bundled_objects, progress=False)
    assert loaded == {
        "AttributeType": 5, "Attribute": 53, "ProductType": 3, "Category": 4, "ProductVariant": 2188,
        "Product": 1470, "ProductPrice": 6564, "Order": 581, "ProductDetailEnter": 14986, "Review": 10046,
    }  # fmt: skip
    assert row_counts(database) == {t.__tablename__: n for t, n in EXPECTED_ROWS.items()}

    with database.session() as session:
        closure = set(session.execute(select(CategoryAncestor.category_id, CategoryAncestor.ancestor_id)))
        assert closure == {(2, 2), (3, 3), (4, 4), (5, 5), (3, 2), (4, 2), (5, 2)}
        assert (
            session.scalar(
                select(func.count()).select_from(Attribute).where(Attribute.raw_value == "(no genres listed)")
            )
            == 1
        )
        assert (
            session.scalar(select(func.count()).select_from(ProductVariant).where(ProductVariant.stock_quantity == 0))
            == 18
        )
        # the file's timestamps are kept; enters keep the file order
        first = session.execute(
            select(ProductDetailEnter.product_variant_sku, ProductDetailEnter.created_at)
            .where(ProductDetailEnter.session_id == "1").order_by(ProductDetailEnter.id).limit(2)
        ).all()  # fmt: skip
        assert [sku for sku, _ in first] == ["104908-cs-720p", "49272-cs-1080p"]
        assert str(first[0][1]) == "2023-07-18 01:05:12.085148"
        # every session is linked to its user; products are the movie ids, all in category 3
        assert session.scalar(select(func.count()).select_from(ShopSession).where(ShopSession.user_id.is_(None))) == 0
        assert session.scalar(select(ShopSession.user_id).where(ShopSession.id == "42")) == "42"
        assert set(session.scalars(select(Product.category_id))) == {3}
        movie_1 = select(ProductProductVariant.product_variant_sku).where(ProductProductVariant.product_id == 1)
        assert set(session.scalars(movie_1)) == {"1-cs-1080p", "1-en-1080p", "1-cs-720p"}
        assert session.scalar(select(func.sum(OrderLine.quantity))) == 206 + 2 * 195 + 3 * 180
        assert revisions.read_all(session)["catalog"] > 0
        if not database.is_sqlite:  # VACUUM ANALYZE after the load: real sizes for the planner, visibility map set
            estimated, all_visible = session.execute(
                text("SELECT reltuples, relallvisible FROM pg_class WHERE relname = 'product_detail_enter'")
            ).one()
            assert estimated == 14986 and all_visible > 0

    # a second start with --if-empty leaves everything as it is (and does not even read the files)
    assert load_demo(container, path="/nonexistent", if_empty=True, progress=False) is None
    assert row_counts(database)[ProductDetailEnter.__tablename__] == 14986


def test_demo_reads_a_directory_of_plain_sql_files(tmp_path, bundled_objects) -> None:  # type: ignore[no-untyped-def]
    for name in ("mock_data_rs_products.sql", "mock_data_rs_feedback.sql"):
        with gzip.open(DEMO_DIR / f"{name}.gz", "rb") as packed, open(tmp_path / name, "wb") as plain:
            shutil.copyfileobj(packed, plain)
    assert read_demo(tmp_path) == bundled_objects
    assert len(bundled_objects) == 5 + 53 + 3 + 4 + 2188 + 1470 + 6564 + 581 + 14986 + 10046


def test_an_invalid_object_stores_nothing(container, database, bundled_objects) -> None:
    broken = [*bundled_objects[:1500], {**bundled_objects[1500], "stock_quantity": "lots"}]  # a variant
    with pytest.raises(InvalidObject, match="^item 1500: invalid field 'stock_quantity'"):
        load_objects(container, broken, progress=False)
    assert all(count == 0 for count in row_counts(database).values())


class FailingEventStore(EventStore):
    def append_events(self, session, model_class, items, now):  # type: ignore[no-untyped-def]
        raise RuntimeError("disk full")


def test_a_failure_while_storing_leaves_nothing_behind(container, database, bundled_objects) -> None:
    enters = [obj for obj in bundled_objects if obj["_model_class"] == "ProductDetailEnter"][:10]
    container.event_store.override(FailingEventStore())
    try:
        with pytest.raises(RuntimeError, match="disk full"):
            load_objects(container, [*bundled_objects[:3000], *enters], progress=False)  # 3 catalogue batches first
    finally:
        container.event_store.reset_override()
    assert all(count == 0 for count in row_counts(database).values())
