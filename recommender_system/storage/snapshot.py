"""Building the in-memory ``CatalogSnapshot`` that the prediction hot path reads, in five plain queries.

Eligibility (what may be recommended at all): a variant is eligible when it is not deleted and either belongs
to at least one product that is published and not deleted, or belongs to no known product at all. The second
case is deliberate: the ecoseller demo has variants without a product row (3 without any relation, and in the
literal replay many relations to product ids that have no row), and nothing says they were withdrawn. A variant
whose only known products are unpublished or deleted is not eligible.

The variant's product (``product_ids``) is its smallest published, not deleted product id; else its smallest known
product id; else its smallest related id; else -1. Category membership counts only published, not deleted
products, and a category includes all its descendants (``category_ancestor``; a category always counts as its
own ancestor, even when its depth-0 row is missing as in the demo SQL). Variants are ordered by SKU (the fixed
"catalogue order" of the dummy model and of every tie-break), the same on every backend.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from datetime import datetime

import numpy as np
import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from recommender_system.domain import CatalogSnapshot
from recommender_system.storage.tables import (
    CategoryAncestor,
    OrderLine,
    Product,
    ProductProductVariant,
    ProductVariant,
    ShopOrder,
    utcnow,
)

logger = logging.getLogger(__name__)

SECONDS_PER_DAY = 86_400.0
_builds = itertools.count(1)


def epoch_seconds(values: list[datetime | None]) -> np.ndarray:
    """Naive-UTC datetimes as float epoch seconds (NaN for None)."""
    stamps = np.array([v if v is not None else np.datetime64("NaT") for v in values], dtype="datetime64[us]")
    seconds = stamps.astype(np.int64).astype(np.float64) / 1e6
    seconds[np.isnat(stamps)] = np.nan
    return seconds


class SnapshotStore:
    def build(
        self, session: Session, half_life_days: float | None = None, now: datetime | None = None
    ) -> CatalogSnapshot:
        """A fresh snapshot of the catalogue and order counts (``recent_units_ordered`` decays with
        ``half_life_days``; without one it equals ``units_ordered``). Its ``revision`` is unique per build."""
        now = now or utcnow()
        variants = session.execute(
            select(
                ProductVariant.sku,
                ProductVariant.stock_quantity,
                ProductVariant.recommendation_weight,
                ProductVariant.deleted,
                ProductVariant.created_at,
            )
        ).all()
        variants.sort(key=lambda row: row[0])
        n = len(variants)
        skus = np.array([row[0] for row in variants], dtype=object)
        sku_index = {sku: i for i, sku in enumerate(skus.tolist())}
        stock = np.array([row[1] or 0 for row in variants], dtype=np.int64)
        weights = np.array([1.0 if row[2] is None else row[2] for row in variants], dtype=np.float64)
        deleted = np.array([bool(row[3]) for row in variants], dtype=bool)
        created_at = np.nan_to_num(epoch_seconds([row[4] for row in variants]), nan=0.0)

        products = pd.DataFrame(
            session.execute(select(Product.id, Product.published, Product.deleted, Product.category_id)).all(),
            columns=["product_id", "published", "deleted", "category_id"],
        )
        products["ok"] = products["published"].fillna(False).astype(bool) & ~products["deleted"].fillna(False).astype(
            bool
        )
        relations = pd.DataFrame(
            session.execute(select(ProductProductVariant.product_id, ProductProductVariant.product_variant_sku)).all(),
            columns=["product_id", "sku"],
        )
        relations["index"] = relations["sku"].map(sku_index)
        relations = relations.dropna(subset=["index"]).astype({"index": np.int64, "product_id": np.int64})
        relations = relations.merge(products[["product_id", "ok"]], on="product_id", how="left")
        relations["known"] = relations["ok"].notna()
        relations["ok"] = relations["ok"].fillna(False).astype(bool)

        has_known = np.zeros(n, dtype=bool)
        has_ok = np.zeros(n, dtype=bool)
        has_known[relations.loc[relations["known"], "index"].to_numpy()] = True
        has_ok[relations.loc[relations["ok"], "index"].to_numpy()] = True
        eligible = ~deleted & (~has_known | has_ok)
        product_ids = self._variant_products(relations, n)

        category_variants, category_products = self._categories(session, products, relations)
        units, recent = self._units(session, sku_index, n, half_life_days, now)
        snapshot = CatalogSnapshot(
            revision=next(_builds),
            skus=skus,
            product_ids=product_ids,
            stock=stock,
            eligible=eligible,
            weights=weights,
            created_at=created_at,
            units_ordered=units,
            recent_units_ordered=recent,
            category_variants=category_variants,
            category_products=category_products,
            sku_index=sku_index,
        )
        logger.info(
            "catalogue snapshot %d: %d variants (%d eligible, %d in stock), %d categories",
            snapshot.revision,
            n,
            int(eligible.sum()),
            int((stock > 0).sum()),
            len(category_variants),
        )
        return snapshot

    @staticmethod
    def _variant_products(relations: pd.DataFrame, n: int) -> np.ndarray:
        """Each variant's product: smallest ok product, else smallest known, else smallest related, else -1."""
        product_ids = np.full(n, -1, dtype=np.int64)
        if relations.empty:
            return product_ids
        # rank 0 = ok, 1 = known, 2 = only related; the best rank then the smallest id wins
        rank = np.where(relations["ok"], 0, np.where(relations["known"], 1, 2))
        ordered = relations.assign(rank=rank).sort_values(["index", "rank", "product_id"], kind="stable")
        first = ordered.drop_duplicates("index", keep="first")
        product_ids[first["index"].to_numpy()] = first["product_id"].to_numpy()
        return product_ids

    @staticmethod
    def _categories(
        session: Session, products: pd.DataFrame, relations: pd.DataFrame
    ) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
        """category -> variant indices / product ids of its published products, descendants included."""
        ancestors = pd.DataFrame(
            session.execute(select(CategoryAncestor.category_id, CategoryAncestor.ancestor_id)).all(),
            columns=["category_id", "ancestor_id"],
        )
        listed = products[products["ok"] & products["category_id"].notna()][["product_id", "category_id"]]
        listed = listed.astype({"category_id": np.int64})
        if listed.empty:
            return {}, {}
        own = pd.DataFrame({"category_id": listed["category_id"].unique()})
        own["ancestor_id"] = own["category_id"]
        ancestors = pd.concat([ancestors.astype(np.int64), own]).drop_duplicates()
        membership = listed.merge(ancestors, on="category_id")[["product_id", "ancestor_id"]]
        category_products = {
            int(category): np.unique(group.to_numpy(dtype=np.int64))
            for category, group in membership.groupby("ancestor_id")["product_id"]
        }
        members = membership.merge(relations[["product_id", "index"]], on="product_id")
        category_variants = {
            int(category): np.unique(group.to_numpy(dtype=np.int64))
            for category, group in members.groupby("ancestor_id")["index"]
        }
        return category_variants, category_products

    def with_orders(
        self,
        session: Session,
        previous: CatalogSnapshot,
        half_life_days: float | None = None,
        now: datetime | None = None,
    ) -> CatalogSnapshot:
        """``previous`` with fresh order counts (one query): what a change of the orders alone needs. The new
        snapshot shares every catalogue array with ``previous`` (same SKUs in the same order) but gets its own
        ``revision`` and memo."""
        units, recent = self._units(session, dict(previous.sku_index), len(previous), half_life_days, now or utcnow())
        return dataclasses.replace(previous, revision=next(_builds), units_ordered=units, recent_units_ordered=recent)

    @staticmethod
    def _units(
        session: Session, sku_index: dict[str, int], n: int, half_life_days: float | None, now: datetime
    ) -> tuple[np.ndarray, np.ndarray]:
        """Units ordered per variant (orders not deleted), and the same with each unit weighted
        ``0.5 ** (age / half-life)``. Aggregated in SQL per SKU (and per day of ordering for the decayed counts,
        whose ages are then taken at noon of that day), so a long order history costs no more than its days."""
        quantity = func.sum(OrderLine.quantity)
        query = (
            select(OrderLine.product_variant_sku, quantity)
            .join(ShopOrder, ShopOrder.token == OrderLine.order_token)
            .where(ShopOrder.deleted.is_(False))
            .group_by(OrderLine.product_variant_sku)
        )
        if half_life_days is not None:
            day = func.date(ShopOrder.created_at)
            query = query.add_columns(day).group_by(day)
        rows = session.execute(query).all()
        units = np.zeros(n, dtype=np.float64)
        if not rows:
            return units, units.copy()
        get = sku_index.get
        index = np.array([get(row[0], -1) for row in rows], dtype=np.int64)
        counts = np.array([float(row[1] or 0) for row in rows], dtype=np.float64)
        known = index >= 0
        units = np.bincount(index[known], weights=counts[known], minlength=n).astype(np.float64)
        if half_life_days is None:
            return units, units.copy()
        noon = np.array([f"{str(row[2])[:10]}T12:00" for row in rows], dtype="datetime64[s]").astype(np.float64)
        age_days = np.clip((epoch_seconds([now])[0] - noon) / SECONDS_PER_DAY, 0.0, None)
        decayed = counts * np.exp2(-age_days / float(half_life_days))
        recent = np.bincount(index[known], weights=decayed[known], minlength=n).astype(np.float64)
        return units, np.nan_to_num(recent)
