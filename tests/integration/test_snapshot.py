"""``SnapshotStore.build`` on both backends: eligibility, products, category subtrees, order counts, recency."""

from __future__ import annotations

from datetime import UTC, timedelta

import numpy as np
import pytest

from recommender_system.storage.snapshot import SnapshotStore
from recommender_system.storage.tables import CategoryAncestor
from tests.factories import (
    SHOP_RECOMMENDABLE,
    T0,
    add_order,
    add_product,
    add_variant,
    seed_shop,
)


@pytest.fixture
def snapshot(database):  # type: ignore[no-untyped-def]
    with database.write_session() as session:
        seed_shop(session)
    with database.session() as session:
        return SnapshotStore().build(session)


def by_sku(snapshot, values):  # type: ignore[no-untyped-def]
    return {str(sku): value for sku, value in zip(snapshot.skus.tolist(), np.asarray(values).tolist(), strict=True)}


def test_variants_in_sku_order_with_stock_weights_and_creation(snapshot) -> None:  # type: ignore[no-untyped-def]
    skus = snapshot.skus.tolist()
    assert skus == sorted(skus)
    assert snapshot.sku_index == {sku: i for i, sku in enumerate(skus)}
    assert by_sku(snapshot, snapshot.stock)["A2"] == 0
    assert by_sku(snapshot, snapshot.weights)["C2"] == 0.0
    created = by_sku(snapshot, snapshot.created_at)
    assert created["A2"] - created["A1"] == pytest.approx(86_400.0)
    assert created["A1"] == pytest.approx(T0.replace(tzinfo=UTC).timestamp())  # naive UTC -> epoch seconds


def test_eligibility_rules(snapshot) -> None:  # type: ignore[no-untyped-def]
    eligible = by_sku(snapshot, snapshot.eligible)
    assert eligible["C3"] is False  # variant deleted
    assert eligible["D1"] is False  # its only product is unpublished
    assert eligible["E1"] is False  # its only product is deleted
    assert eligible["N1"] is True  # no product at all: eligible unless deleted
    assert eligible["A2"] is True  # out of stock is still eligible (category lists show it last)
    recommendable = {sku for sku, ok in by_sku(snapshot, snapshot.recommendable).items() if ok}
    assert recommendable == SHOP_RECOMMENDABLE


def test_product_of_each_variant(snapshot) -> None:  # type: ignore[no-untyped-def]
    products = by_sku(snapshot, snapshot.product_ids)
    assert products["A1"] == products["A2"] == 10
    assert products["D1"] == 40  # known even when unpublished
    assert products["N1"] == -1


def test_categories_include_descendants_and_only_listed_products(snapshot) -> None:  # type: ignore[no-untyped-def]
    def members(category: int) -> set[str]:
        return {str(snapshot.skus[i]) for i in snapshot.category_variants.get(category, [])}

    # 1 > 2 > 3: the root holds everything below it; unpublished (40) and deleted (50) products are not members
    assert members(1) == {"A1", "A2", "B1", "C1", "C2", "C3", "12345"}
    assert members(2) == {"A1", "A2", "B1"}
    assert members(3) == {"B1"}
    assert members(9) == {"G1"}
    assert snapshot.category_products[1].tolist() == [10, 20, 30, 60]
    assert snapshot.category_products[3].tolist() == [20]


def test_category_without_self_ancestor_row_still_holds_its_products(database) -> None:  # type: ignore[no-untyped-def]
    # the demo SQL loses the depth-0 rows of categories 3, 4, 5
    with database.write_session() as session:
        session.add(CategoryAncestor(category_id=3, ancestor_id=2, depth=1))
        add_variant(session, "m1")
        add_product(session, 1, ["m1"], category_id=3)
    with database.session() as session:
        snapshot = SnapshotStore().build(session)
    assert snapshot.category_variants[3].tolist() == [0]
    assert snapshot.category_variants[2].tolist() == [0]


def test_units_ordered_and_recency_weighting(database) -> None:  # type: ignore[no-untyped-def]
    now = T0 + timedelta(days=20)
    with database.write_session() as session:
        for sku in ("old", "new", "never", "gone"):
            add_variant(session, sku)
        add_order(session, "t1", [("old", 4)], created_at=now - timedelta(days=10))
        add_order(session, "t2", [("new", 2), ("new", 1)], created_at=now)
        add_order(session, "t3", [("gone", 7)], created_at=now, deleted=True)
        add_order(session, "t4", [("unknown-sku", 5)], created_at=now)
    with database.session() as session:
        plain = SnapshotStore().build(session, now=now)
        decayed = SnapshotStore().build(session, half_life_days=10.0, now=now)
    assert by_sku(plain, plain.units_ordered) == {"gone": 0.0, "never": 0.0, "new": 3.0, "old": 4.0}
    assert by_sku(plain, plain.recent_units_ordered) == by_sku(plain, plain.units_ordered)
    recent = by_sku(decayed, decayed.recent_units_ordered)
    assert recent["old"] == pytest.approx(2.0)  # one half-life old: half weight
    assert recent["new"] == pytest.approx(3.0)
    assert decayed.revision != plain.revision


def test_empty_catalogue(database) -> None:  # type: ignore[no-untyped-def]
    with database.session() as session:
        snapshot = SnapshotStore().build(session)
    assert len(snapshot) == 0
    assert snapshot.category_variants == {}


def test_fresh_order_counts_share_the_catalogue(database) -> None:  # type: ignore[no-untyped-def]
    now = T0 + timedelta(days=30)
    with database.write_session() as session:
        seed_shop(session)
    store = SnapshotStore()
    with database.session() as session:
        first = store.build(session)
    with database.write_session() as session:
        add_order(session, "late", [("G1", 4), ("A1", 1)], created_at=now - timedelta(days=5))
    with database.session() as session:
        refreshed = store.with_orders(session, first, half_life_days=5.0, now=now)
    assert refreshed.skus is first.skus and refreshed.category_variants is first.category_variants
    assert refreshed.revision != first.revision
    units = by_sku(refreshed, refreshed.units_ordered)
    assert units["G1"] == 4.0 and units["A1"] == 4.0  # 3 from seed_shop + 1
    recent = by_sku(refreshed, refreshed.recent_units_ordered)
    assert recent["G1"] == pytest.approx(2.0)  # ordered one half-life ago (ages at day resolution)
    assert by_sku(first, first.units_ordered)["G1"] == 0.0  # the previous snapshot is untouched
