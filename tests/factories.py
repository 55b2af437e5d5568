"""Small builders of test data: catalogue and event rows written with the tables, and hand-built snapshots.

Database helpers take a SQLAlchemy ``Session`` and add rows (the caller commits); ``bump`` marks the catalogue,
orders and events as changed so that a ``ModelManager`` refresh rebuilds its snapshot.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy.orm import Session

from recommender_system.domain import CatalogSnapshot
from recommender_system.storage import revisions
from recommender_system.storage.tables import (
    Category,
    CategoryAncestor,
    OrderLine,
    Product,
    ProductAddToCart,
    ProductDetailEnter,
    ProductProductVariant,
    ProductVariant,
    Review,
    ShopOrder,
    ShopSession,
)

T0 = datetime(2024, 1, 1, 12, 0, 0)


# --- database rows ------------------------------------------------------------------------------------------------
def add_categories(session: Session, parents: Mapping[int, int | None]) -> None:
    """Categories ``{id: parent_id}`` with their full closure (self rows included)."""
    for category_id, parent_id in parents.items():
        session.add(Category(id=category_id, parent_id=parent_id))
        depth, current = 0, category_id
        seen: set[int] = set()
        while current is not None and current not in seen:
            seen.add(current)
            session.add(CategoryAncestor(category_id=category_id, ancestor_id=current, depth=depth))
            current = parents.get(current)
            depth += 1


def add_variant(
    session: Session,
    sku: str,
    stock: int = 5,
    weight: float = 1.0,
    deleted: bool = False,
    created_at: datetime = T0,
) -> None:
    session.add(
        ProductVariant(
            sku=sku,
            stock_quantity=stock,
            recommendation_weight=weight,
            deleted=deleted,
            created_at=created_at,
            updated_at=created_at,
        )
    )


def add_product(
    session: Session,
    product_id: int,
    skus: Iterable[str],
    category_id: int | None = None,
    published: bool = True,
    deleted: bool = False,
) -> None:
    """A product row and its variant relations (the variants are added separately)."""
    session.add(Product(id=product_id, published=published, deleted=deleted, category_id=category_id))
    for sku in skus:
        session.add(ProductProductVariant(product_id=product_id, product_variant_sku=sku))


def add_order(
    session: Session,
    token: str,
    lines: Sequence[tuple[str, int]],
    session_id: str | None = None,
    user_id: str | None = None,
    created_at: datetime = T0,
    deleted: bool = False,
) -> None:
    session.add(
        ShopOrder(
            token=token,
            session_id=session_id,
            user_id=user_id,
            created_at=created_at,
            updated_at=created_at,
            deleted=deleted,
        )
    )
    session.flush()
    for number, (sku, quantity) in enumerate(lines):
        session.add(OrderLine(order_token=token, line_number=number, product_variant_sku=sku, quantity=quantity))


def add_session(session: Session, session_id: str, user_id: str | None = None, created_at: datetime = T0) -> None:
    session.add(ShopSession(id=session_id, user_id=user_id, created_at=created_at, updated_at=created_at))


def add_view(session: Session, session_id: str, sku: str, created_at: datetime, user_id: str | None = None) -> None:
    session.add(
        ProductDetailEnter(session_id=session_id, user_id=user_id, product_variant_sku=sku, created_at=created_at)
    )


def add_cart(session: Session, session_id: str, sku: str, created_at: datetime) -> None:
    session.add(ProductAddToCart(session_id=session_id, product_variant_sku=sku, created_at=created_at))


def add_review(
    session: Session, review_id: int, session_id: str, sku: str, rating: int, created_at: datetime, user_id: str | None
) -> None:
    session.add(
        Review(
            id=review_id,
            session_id=session_id,
            user_id=user_id,
            product_variant_sku=sku,
            rating=rating,
            created_at=created_at,
            updated_at=created_at,
        )
    )


def bump(session: Session) -> None:
    """Mark catalogue, orders and events as changed (what the ingest path does)."""
    session.flush()
    revisions.bump(session, revisions.CATALOG, revisions.ORDERS, revisions.EVENTS)


# --- the standard small shop -------------------------------------------------------------------------------------
SHOP_CATEGORIES: dict[int, int | None] = {1: None, 2: 1, 3: 2, 9: None}
"""1 is the root; 2 under 1; 3 under 2; 9 is an unrelated root."""


def seed_shop(session: Session) -> None:
    """A small catalogue covering every eligibility case, with a few orders.

    ====== ======= ========== ========================================================
    sku    product category   notes
    ====== ======= ========== ========================================================
    A1     10      2          in stock; ordered 3
    A2     10      2          out of stock
    B1     20      3          ordered 1
    C1     30      1          ordered 2
    C2     30      1          weight 0
    C3     30      1          variant deleted
    D1     40      2          product unpublished
    E1     50      3          product deleted
    N1     --      --         no product at all (eligible)
    12345  60      1          numeric SKU
    G1     70      9          another root
    ====== ======= ========== ========================================================
    """
    add_categories(session, SHOP_CATEGORIES)
    for offset, (sku, stock, weight, deleted) in enumerate(
        [
            ("A1", 5, 1.0, False),
            ("A2", 0, 1.0, False),
            ("B1", 2, 1.0, False),
            ("C1", 9, 1.0, False),
            ("C2", 4, 0.0, False),
            ("C3", 4, 1.0, True),
            ("D1", 4, 1.0, False),
            ("E1", 4, 1.0, False),
            ("N1", 4, 1.0, False),
            ("12345", 4, 1.0, False),
            ("G1", 4, 1.0, False),
        ]
    ):
        add_variant(session, sku, stock=stock, weight=weight, deleted=deleted, created_at=T0 + timedelta(days=offset))
    add_product(session, 10, ["A1", "A2"], category_id=2)
    add_product(session, 20, ["B1"], category_id=3)
    add_product(session, 30, ["C1", "C2", "C3"], category_id=1)
    add_product(session, 40, ["D1"], category_id=2, published=False)
    add_product(session, 50, ["E1"], category_id=3, deleted=True)
    add_product(session, 60, ["12345"], category_id=1)
    add_product(session, 70, ["G1"], category_id=9)
    add_order(session, "o1", [("A1", 3)], session_id="s-old", created_at=T0)
    add_order(session, "o2", [("C1", 2), ("B1", 1)], session_id="s-old", created_at=T0 + timedelta(days=1))
    bump(session)


SHOP_RECOMMENDABLE = {"A1", "B1", "C1", "C2", "N1", "12345", "G1"}
"""Eligible and in stock in ``seed_shop``."""


# --- hand-built snapshots (no database) -------------------------------------------------------------------------
@dataclass
class VariantSpec:
    sku: str
    product_id: int = -1
    stock: int = 5
    eligible: bool = True
    weight: float = 1.0
    created_at: float = 0.0
    units: float = 0.0


@dataclass
class CatalogBuilder:
    """Builds a ``CatalogSnapshot`` from variant specs and category membership, in the given order."""

    variants: list[VariantSpec] = field(default_factory=list)
    categories: dict[int, list[str]] = field(default_factory=dict)
    revision: int = 1

    def add(self, sku: str, **kwargs: object) -> CatalogBuilder:
        self.variants.append(VariantSpec(sku, **kwargs))  # type: ignore[arg-type]
        return self

    def build(self) -> CatalogSnapshot:
        skus = [v.sku for v in self.variants]
        index = {sku: i for i, sku in enumerate(skus)}
        product_ids = np.array([v.product_id for v in self.variants], dtype=np.int64)
        category_variants = {
            category: np.array(sorted(index[s] for s in members), dtype=np.int64)
            for category, members in self.categories.items()
        }
        category_products = {
            category: np.unique(product_ids[indices][product_ids[indices] >= 0])
            for category, indices in category_variants.items()
        }
        units = np.array([v.units for v in self.variants], dtype=np.float64)
        return CatalogSnapshot(
            revision=self.revision,
            skus=np.array(skus, dtype=object),
            product_ids=product_ids,
            stock=np.array([v.stock for v in self.variants], dtype=np.int64),
            eligible=np.array([v.eligible for v in self.variants], dtype=bool),
            weights=np.array([v.weight for v in self.variants], dtype=np.float64),
            created_at=np.array([v.created_at for v in self.variants], dtype=np.float64),
            units_ordered=units,
            recent_units_ordered=units.copy(),
            category_variants=category_variants,
            category_products=category_products,
        )


def numbered_catalog(n: int, units: Sequence[float] | None = None) -> CatalogSnapshot:
    """``n`` plain variants ``v000``.. each its own product, all eligible and in stock."""
    builder = CatalogBuilder()
    for i in range(n):
        builder.add(f"v{i:03d}", product_id=i, created_at=float(i), units=float(units[i]) if units else 0.0)
    return builder.build()


def is_mapped(array: np.ndarray) -> bool:
    """A plain ndarray (fast to index) over a read-only memory map of the artefact file (shared between processes)."""
    base = array
    while base is not None and not isinstance(base, np.memmap):
        base = base.base
    return type(array) is np.ndarray and isinstance(base, np.memmap) and not array.flags.writeable
