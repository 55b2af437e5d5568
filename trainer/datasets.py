"""The training frames of ``TrainingData``, read from the database, and the data snapshot stored with a version.

``events`` holds every shopper event (eligible variant or not: eligibility can change after training, and the
pipeline filters at serving time), one row each: product-detail views and add-to-carts weigh 1, an ordered line
its quantity, a review its rating. ``user_key`` is the user the session is linked to (``shop_session.user_id``),
else the event's own ``user_id``, else ``"s:<session id>"`` (``"o:<token>"`` for an order without a session), so
all sessions of a known user form one history. Rows are sorted by time; ties keep views before add-to-carts
before orders before reviews, each in insertion order.

``variants`` holds every variant with its eligibility as the web process computes it (``SnapshotStore``: not
deleted and published in some product, or in no known product) and one representative price. Price lists can
be in different currencies, so prices are not mixed blindly: the representative price of a SKU is its price in
the *primary* price list (the one that prices the most SKUs; ties by code); a SKU missing from it takes its price
in another list, converted with the median ratio between that list and the primary one over the SKUs both price;
a SKU with no usable price gets NaN (models treat it as missing). Deleted price rows are ignored; duplicates of a
(SKU, list) keep the most recently updated row.

``attributes`` holds the variants' attribute values with their type (``CATEGORICAL`` or ``NUMERICAL``), skipping
deleted attributes and attribute types.

The *data snapshot* (``data_snapshot``) records event counts and a catalogue watermark (the newest
``updated_at`` in the catalogue tables, on the catalogue's own clock) so the scheduler can later count what changed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from recommender_system.prediction.models.base import TrainingData
from recommender_system.storage.snapshot import SnapshotStore
from recommender_system.storage.tables import (
    Attribute,
    AttributeType,
    OrderLine,
    Product,
    ProductAddToCart,
    ProductDetailEnter,
    ProductPrice,
    ProductVariant,
    Review,
    ShopOrder,
    ShopSession,
    VariantAttribute,
    utcnow,
)

logger = logging.getLogger(__name__)

EVENT_COLUMNS = ["user_key", "session_id", "sku", "event", "weight", "timestamp"]
VARIANT_COLUMNS = ["sku", "product_id", "price", "stock", "eligible"]
ATTRIBUTE_COLUMNS = ["sku", "attribute_type_id", "type", "raw_value", "numeric_value"]
EVENT_ORDER = {"view": 0, "cart": 1, "order": 2, "review": 3}
CATALOG_TABLES = (ProductVariant, Product, ProductPrice, Attribute, AttributeType)


def _read(session: Session, statement: Any, columns: list[str]) -> pd.DataFrame:
    frame = pd.read_sql(statement, session.connection())
    frame.columns = columns
    return frame


# --- events -------------------------------------------------------------------------------------------------
def load_events(session: Session) -> pd.DataFrame:
    """Every view, add-to-cart, ordered line and review as one frame (``TrainingData.events``)."""
    linked_sessions = select(ShopSession.id, ShopSession.user_id).where(ShopSession.user_id.is_not(None))
    session_users = {session_id: user_id for session_id, user_id in session.execute(linked_sessions)}
    simple = ["seq", "session_id", "user_id", "sku", "timestamp"]
    views = _read(
        session,
        select(
            ProductDetailEnter.id,
            ProductDetailEnter.session_id,
            ProductDetailEnter.user_id,
            ProductDetailEnter.product_variant_sku,
            ProductDetailEnter.created_at,
        ),
        simple,
    ).assign(event="view", weight=1.0)
    carts = _read(
        session,
        select(
            ProductAddToCart.id,
            ProductAddToCart.session_id,
            ProductAddToCart.user_id,
            ProductAddToCart.product_variant_sku,
            ProductAddToCart.created_at,
        ),
        simple,
    ).assign(event="cart", weight=1.0)
    orders = _read(
        session,
        select(
            ShopOrder.token,
            OrderLine.line_number,
            ShopOrder.session_id,
            ShopOrder.user_id,
            OrderLine.product_variant_sku,
            OrderLine.quantity,
            ShopOrder.created_at,
        )
        .join(ShopOrder, ShopOrder.token == OrderLine.order_token)
        .where(ShopOrder.deleted.is_(False))
        .order_by(ShopOrder.created_at, ShopOrder.token, OrderLine.line_number),
        ["token", "line", "session_id", "user_id", "sku", "weight", "timestamp"],
    )
    no_session = orders["session_id"].isna()
    orders.loc[no_session, "session_id"] = "o:" + orders.loc[no_session, "token"].astype(str)
    orders = orders.assign(event="order", seq=np.arange(len(orders)), weight=orders["weight"].astype(float))
    reviews = _read(
        session,
        select(
            Review.id,
            Review.session_id,
            Review.user_id,
            Review.product_variant_sku,
            Review.rating,
            Review.created_at,
        ),
        ["seq", "session_id", "user_id", "sku", "weight", "timestamp"],
    ).assign(event="review")
    reviews["weight"] = reviews["weight"].astype(float)

    parts = [frame for frame in (views, carts, orders, reviews) if not frame.empty]
    if not parts:
        return pd.DataFrame(
            {
                "user_key": pd.Series(dtype=object),
                "session_id": pd.Series(dtype=object),
                "sku": pd.Series(dtype=object),
                "event": pd.Series(dtype=object),
                "weight": pd.Series(dtype=np.float64),
                "timestamp": pd.Series(dtype="datetime64[us]"),
            }
        )
    events = pd.concat(parts, ignore_index=True)
    events["timestamp"] = pd.to_datetime(events["timestamp"])
    events["session_id"] = events["session_id"].astype(str)
    linked = events["session_id"].map(session_users)
    own = events["user_id"].where(events["user_id"].notna() & (events["user_id"].astype(str) != ""))
    fallback = np.where(events["session_id"].str.startswith("o:"), events["session_id"], "s:" + events["session_id"])
    events["user_key"] = linked.fillna(own).fillna(pd.Series(fallback, index=events.index)).astype(str)
    events["rank"] = events["event"].map(EVENT_ORDER)
    events = events.sort_values(["timestamp", "rank", "seq"], kind="stable").reset_index(drop=True)
    events["weight"] = events["weight"].astype(np.float64)
    events["sku"] = events["sku"].astype(str)
    return events[EVENT_COLUMNS]


# --- catalogue ----------------------------------------------------------------------------------------------
def representative_prices(prices: pd.DataFrame) -> pd.Series:
    """One price per SKU from rows ``sku, price_list_code, price, updated_at`` (see the module docstring)."""
    if prices.empty:
        return pd.Series(dtype=np.float64)
    prices = prices.dropna(subset=["sku", "price"])
    prices = prices.sort_values("updated_at", kind="stable").drop_duplicates(["sku", "price_list_code"], keep="last")
    table = prices.pivot(index="sku", columns="price_list_code", values="price")
    counts = table.notna().sum()
    primary = sorted(counts.index, key=lambda code: (-int(counts[code]), str(code)))[0]
    result = table[primary].copy()
    for code in sorted(counts.index, key=lambda c: (-int(counts[c]), str(c)))[1:]:
        missing = result.isna() & table[code].notna()
        if not missing.any():
            continue
        both = table[primary].notna() & table[code].notna() & (table[code] != 0)
        if not both.any():
            continue  # no common SKU: the two currencies cannot be related
        ratio = float((table.loc[both, primary] / table.loc[both, code]).median())
        result[missing] = table.loc[missing, code] * ratio
    result.name = "price"
    return result


def load_variants(session: Session) -> pd.DataFrame:
    """Every variant: ``sku, product_id, price, stock, eligible`` (eligibility as the web process computes it)."""
    snapshot = SnapshotStore().build(session)
    variants = pd.DataFrame(
        {
            "sku": snapshot.skus.astype(str) if len(snapshot) else np.array([], dtype=object),
            "product_id": snapshot.product_ids,
            "stock": snapshot.stock,
            "eligible": snapshot.eligible,
        }
    )
    prices = _read(
        session,
        select(
            ProductPrice.product_variant_sku, ProductPrice.price_list_code, ProductPrice.price, ProductPrice.updated_at
        )
        .where(ProductPrice.deleted.is_(False))
        .order_by(ProductPrice.id),
        ["sku", "price_list_code", "price", "updated_at"],
    )
    price = representative_prices(prices)
    variants["price"] = variants["sku"].map(price).astype(np.float64)
    return variants[VARIANT_COLUMNS]


def load_attributes(session: Session) -> pd.DataFrame:
    """The variants' attribute values: ``sku, attribute_type_id, type, raw_value, numeric_value``."""
    frame = _read(
        session,
        select(
            VariantAttribute.product_variant_sku,
            Attribute.attribute_type_id,
            AttributeType.type,
            Attribute.raw_value,
            Attribute.numeric_value,
        )
        .join(Attribute, Attribute.id == VariantAttribute.attribute_id)
        .outerjoin(AttributeType, AttributeType.id == Attribute.attribute_type_id)
        .where(Attribute.deleted.is_(False), AttributeType.deleted.is_not(True))
        .order_by(VariantAttribute.product_variant_sku, Attribute.attribute_type_id, Attribute.id),
        ATTRIBUTE_COLUMNS,
    )
    frame["type"] = frame["type"].fillna("CATEGORICAL").astype(str).str.upper()
    frame["numeric_value"] = frame["numeric_value"].astype(np.float64)
    return frame


def load_training_data(
    session: Session, hyperparameters: Mapping[str, Any] | None = None, seed: int = 0
) -> TrainingData:
    """All three frames, read in one unit of work."""
    data = TrainingData(
        events=load_events(session),
        variants=load_variants(session),
        attributes=load_attributes(session),
        hyperparameters=dict(hyperparameters or {}),
        seed=seed,
    )
    logger.info(
        "training data: %d events (%s), %d variants (%d eligible), %d attribute values",
        len(data.events),
        ", ".join(f"{k} {v}" for k, v in data.events["event"].value_counts().sort_index().items()) or "none",
        len(data.variants),
        int(data.variants["eligible"].sum()) if len(data.variants) else 0,
        len(data.attributes),
    )
    return data


# --- the data snapshot --------------------------------------------------------------------------------------
def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def data_snapshot(session: Session) -> dict[str, Any]:
    """Cheap counts of what a training reads, stored in each version's manifest.

    Views and add-to-carts are append-only, so their greatest id is their count (an index lookup, not a scan).
    """
    views = session.scalar(select(func.max(ProductDetailEnter.id))) or 0
    carts = session.scalar(select(func.max(ProductAddToCart.id))) or 0
    orders = (
        session.scalar(
            select(func.count())
            .select_from(OrderLine)
            .join(ShopOrder, ShopOrder.token == OrderLine.order_token)
            .where(ShopOrder.deleted.is_(False))
        )
        or 0
    )
    reviews = session.scalar(select(func.count()).select_from(Review)) or 0
    variants = session.scalar(select(func.count()).select_from(ProductVariant).where(ProductVariant.deleted.is_(False)))
    watermarks = [session.scalar(select(func.max(table.updated_at))) for table in CATALOG_TABLES]
    known = [w for w in watermarks if w is not None]
    counts = {"view": int(views), "cart": int(carts), "order": int(orders), "review": int(reviews)}
    return {
        "taken_at": utcnow().isoformat(timespec="seconds"),
        "events": counts,
        "n_events": sum(counts.values()),
        "n_variants": int(variants or 0),
        "catalog_updated_at": _iso(max(known)) if known else None,
    }


def catalog_changes_since(session: Session, watermark: str | None) -> int:
    """Catalogue rows (variants, products, prices, attributes, attribute types) updated after ``watermark``."""
    since = datetime.fromisoformat(watermark) if watermark else None
    total = 0
    for table in CATALOG_TABLES:
        query = select(func.count()).select_from(table)
        if since is not None:
            query = query.where(table.updated_at > since)
        total += int(session.scalar(query) or 0)
    return total
