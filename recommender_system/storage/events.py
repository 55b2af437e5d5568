"""The write side of shopper events: sessions, product-detail enters and leaves, add-to-carts, recommendation views,
reviews and orders (with their lines).

Events are appended; reviews are upserted by id; orders are upserted by token with their lines replaced. An
event's ``created_at`` is the client's timestamp when sent, else the arrival time ``now``; ``updated_at`` of
reviews and orders is always ``now``. Every
event links its ``session_id``: the ``shop_session`` row is created when missing, and a ``user_id`` given links the
session to that user (a later event naming another user updates it). Every method takes the caller's
unit-of-work ``Session`` and validated ingest objects (the ``*In`` schemas of ``api/schemas/ingest.py``, read by
attribute), and writes one multi-row statement per table; the caller bumps the revisions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Table
from sqlalchemy.orm import Session

from recommender_system.storage import bulk
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

EVENT_TABLES: dict[str, Table] = {
    "ProductDetailEnter": ProductDetailEnter.__table__,  # type: ignore[dict-item]
    "ProductDetailLeave": ProductDetailLeave.__table__,  # type: ignore[dict-item]
    "ProductAddToCart": ProductAddToCart.__table__,  # type: ignore[dict-item]
    "RecommendationView": RecommendationView.__table__,  # type: ignore[dict-item]
}
"""``_model_class`` of each appended event -> its table."""

_EVENT_COLUMNS: dict[str, tuple[str, ...]] = {
    "ProductDetailEnter": ("recommendation_type", "model_name", "model_identifier", "position"),
    "ProductDetailLeave": ("time_spent",),
    "ProductAddToCart": (),
    "RecommendationView": ("recommendation_type", "model_identifier", "position"),
}

_SESSION = ShopSession.__table__


class EventStore:
    """Stateless."""

    def append_events(self, session: Session, model_class: str, items: Sequence[Any], now: datetime) -> None:
        """Append events of one class (in the given order) and link their sessions. Deleted events are skipped."""
        items = [item for item in items if not item.deleted]
        if not items:
            return
        extra = _EVENT_COLUMNS[model_class]
        rows = []
        for item in items:
            row = {
                "session_id": item.session_id,
                "user_id": item.user_id,
                "product_id": item.product_id,
                "product_variant_sku": item.product_variant_sku,
                "created_at": item.create_at or now,
            }
            for column in extra:
                row[column] = getattr(item, column)
            rows.append(row)
        self.link_sessions(session, ((row["session_id"], row["user_id"], row["created_at"]) for row in rows), now)
        bulk.insert(session, EVENT_TABLES[model_class], rows)

    def upsert_reviews(self, session: Session, items: Sequence[Any], now: datetime) -> None:
        """Upsert by id (a re-send is not an error); a review sent with ``deleted: true`` is removed."""
        latest = list({item.id: item for item in items}.values())
        rows = [
            {
                "id": item.id,
                "session_id": item.session_id,
                "user_id": item.user_id,
                "product_id": item.product_id,
                "product_variant_sku": item.product_variant_sku,
                "rating": item.rating,
                "created_at": item.create_at,
                "updated_at": now,
            }
            for item in latest
            if not item.deleted
        ]
        table = Review.__table__
        bulk.delete_where_in(session, table, "id", (item.id for item in latest if item.deleted))
        self.link_sessions(session, ((r["session_id"], r["user_id"], r["created_at"] or now) for r in rows), now)
        bulk.upsert(session, table, rows, ["id"], keep_when_missing={"created_at": now})

    def upsert_orders(self, session: Session, items: Sequence[Any], now: datetime) -> None:
        """Upsert by token; the order's lines are replaced (a re-send never duplicates them)."""
        latest = list({str(item.token): item for item in items}.values())
        rows = [
            {
                "token": str(item.token),
                "session_id": item.session_id,
                "user_id": item.user_id,
                "deleted": item.deleted,
                "created_at": item.create_at,
                "updated_at": now,
            }
            for item in latest
        ]
        self.link_sessions(session, ((r["session_id"], r["user_id"], r["created_at"] or now) for r in rows), now)
        bulk.upsert(session, ShopOrder.__table__, rows, ["token"], keep_when_missing={"created_at": now})
        lines = [
            {"order_token": str(item.token), "line_number": number, "product_variant_sku": sku, "quantity": quantity}
            for item in latest
            for number, (sku, quantity) in enumerate(item.product_variants)
        ]
        table = OrderLine.__table__
        bulk.delete_where_in(session, table, "order_token", (row["token"] for row in rows))
        bulk.insert(session, table, lines)

    def link_sessions(
        self, session: Session, references: Iterable[tuple[str, str | None, datetime]], now: datetime
    ) -> None:
        """Create the missing ``shop_session`` rows of ``(session_id, user_id, seen_at)`` references and link
        sessions to the user named last. A new session's ``created_at`` is its earliest event."""
        first_seen: dict[str, datetime] = {}
        user_of: dict[str, str] = {}
        for session_id, user_id, seen_at in references:
            known = first_seen.get(session_id)
            if known is None or seen_at < known:
                first_seen[session_id] = seen_at
            if user_id is not None:
                user_of[session_id] = user_id
        if not first_seen:
            return
        anonymous = [
            {"id": sid, "user_id": None, "created_at": seen, "updated_at": now}
            for sid, seen in first_seen.items()
            if sid not in user_of
        ]
        bulk.insert_ignore(session, _SESSION, anonymous, ["id"])
        if user_of:
            named = [
                {"id": sid, "user_id": user, "created_at": first_seen[sid], "updated_at": now}
                for sid, user in user_of.items()
            ]
            bulk.upsert(
                session,
                _SESSION,
                named,
                ["id"],
                update_columns=("user_id", "updated_at"),
                update_where=lambda excluded: _SESSION.c.user_id.is_distinct_from(excluded.user_id),
            )
