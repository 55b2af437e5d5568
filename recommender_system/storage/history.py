"""A shopper's history for one prediction: ONE query over views, cart adds, orders and reviews.

The shopper is the session, plus every session of its user: the user named by the request, else the user the
session is linked to (``shop_session.user_id``). Each kind of event is bounded to its newest ``limit`` rows, so the
query stays cheap for a shopper with a long past; every branch is served by a (session_id, created_at) index.
"""

from __future__ import annotations

from sqlalchemy import Float, ScalarSelect, String, cast, literal, or_, select, union_all
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from recommender_system.domain import EMPTY_HISTORY, SessionHistory
from recommender_system.storage.tables import (
    OrderLine,
    ProductAddToCart,
    ProductDetailEnter,
    Review,
    ShopOrder,
    ShopSession,
)

DEFAULT_LIMIT = 200


class HistoryStore:
    def load(
        self, session: Session, session_id: str | None, user_id: str | None = None, limit: int = DEFAULT_LIMIT
    ) -> SessionHistory:
        """The history of ``session_id`` and of its user's sessions, oldest first (the newest ``limit`` events of
        each kind). An anonymous request without a user has no history and costs no query."""
        if not session_id and not user_id:
            return EMPTY_HISTORY
        user = self._effective_user(session_id, user_id)
        user_sessions = select(ShopSession.id).where(ShopSession.user_id == user)

        def belongs(column: ColumnElement[str | None]) -> ColumnElement[bool]:
            conditions = [column.in_(user_sessions)]
            if session_id:
                conditions.insert(0, column == session_id)
            return or_(*conditions)

        def branch(kind: str, table, sku, value, where, created, sequence):  # type: ignore[no-untyped-def]
            inner = (
                select(
                    literal(kind, String).label("kind"),
                    table.session_id.label("session_id"),
                    sku.label("sku"),
                    cast(value, Float).label("value"),
                    created.label("created_at"),
                    sequence.label("sequence"),
                )
                .where(where)
                .order_by(created.desc(), sequence.desc())
                .limit(limit)
                .subquery()
            )
            return select(*inner.c)

        views = branch(
            "view",
            ProductDetailEnter,
            ProductDetailEnter.product_variant_sku,
            literal(1.0),
            belongs(ProductDetailEnter.session_id),
            ProductDetailEnter.created_at,
            ProductDetailEnter.id,
        )
        carts = branch(
            "cart",
            ProductAddToCart,
            ProductAddToCart.product_variant_sku,
            literal(1.0),
            belongs(ProductAddToCart.session_id),
            ProductAddToCart.created_at,
            ProductAddToCart.id,
        )
        orders = branch(
            "order",
            ShopOrder,
            OrderLine.product_variant_sku,
            OrderLine.quantity,
            (ShopOrder.token == OrderLine.order_token)
            & ShopOrder.deleted.is_(False)
            & or_(belongs(ShopOrder.session_id), ShopOrder.user_id == user),
            ShopOrder.created_at,
            OrderLine.line_number,
        )
        reviews = branch(
            "review",
            Review,
            Review.product_variant_sku,
            Review.rating,
            or_(belongs(Review.session_id), Review.user_id == user),
            Review.created_at,
            Review.id,
        )
        rows = session.execute(union_all(views, carts, orders, reviews)).all()
        return self._history(rows, session_id)

    @staticmethod
    def _effective_user(session_id: str | None, user_id: str | None) -> ColumnElement[str | None] | ScalarSelect:
        if user_id:
            return literal(user_id, String)
        return select(ShopSession.user_id).where(ShopSession.id == session_id).scalar_subquery()

    @staticmethod
    def _history(rows: list, session_id: str | None) -> SessionHistory:  # type: ignore[type-arg]
        rows = sorted(rows, key=lambda row: (row.created_at, row.sequence))
        visited: list[str] = []
        session_visited: list[str] = []
        carted: list[str] = []
        ordered: list[str] = []
        rated: list[tuple[str, float]] = []
        for row in rows:
            if row.kind == "view":
                visited.append(row.sku)
                if session_id and row.session_id == session_id:
                    session_visited.append(row.sku)
            elif row.kind == "cart":
                carted.append(row.sku)
            elif row.kind == "order":
                ordered.append(row.sku)
            else:
                rated.append((row.sku, float(row.value)))
        if not (visited or carted or ordered or rated):
            return EMPTY_HISTORY
        return SessionHistory(
            visited=tuple(visited),
            session_visited=tuple(session_visited),
            carted=tuple(carted),
            ordered=tuple(ordered),
            rated=tuple(rated),
        )
