"""A shopper's history for one prediction: ONE query over views, cart adds, orders and reviews.

The shopper is the session, plus every session of its user: the user named by the request, else the user the
session is linked to (``shop_session.user_id``). Each kind of event is bounded to its newest ``limit`` rows, so the
query stays cheap for a shopper with a long past; every branch is served by a (session_id, created_at) index.
"""

from __future__ import annotations

from sqlalchemy import (
    DateTime,
    Float,
    Integer,
    ScalarSelect,
    String,
    TextualSelect,
    bindparam,
    cast,
    column,
    literal_column,
    select,
    text,
    union_all,
)
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
    def __init__(self) -> None:
        # the statement has four shapes (session and/or user known); each is built and compiled once per dialect
        self._statements: dict[tuple[str, bool, bool], TextualSelect] = {}

    def load(
        self, session: Session, session_id: str | None, user_id: str | None = None, limit: int = DEFAULT_LIMIT
    ) -> SessionHistory:
        """The history of ``session_id`` and of its user's sessions, oldest first (the newest ``limit`` events of
        each kind). An anonymous request without a user has no history and costs no query."""
        if not session_id and not user_id:
            return EMPTY_HISTORY
        key = (session.get_bind().dialect.name, bool(session_id), bool(user_id))
        statement = self._statements.get(key)
        if statement is None:
            statement = self._statements.setdefault(key, self._statement(bool(session_id), bool(user_id)))
        params: dict[str, object] = {"limit": limit}
        if session_id:
            params["session_id"] = session_id
        if user_id:
            params["user_id"] = user_id
        rows = session.execute(statement, params).all()
        return self._history(rows, session_id)

    @staticmethod
    def _statement(has_session: bool, has_user: bool) -> TextualSelect:
        """The union of the four bounded branches as portable SQL text with the bind parameters ``session_id``,
        ``user_id`` and ``limit`` (built once: constructing the expression per request cost milliseconds)."""
        limit = bindparam("limit", type_=Integer)
        user: ColumnElement[str | None] | ScalarSelect
        if has_user:
            user = bindparam("user_id", type_=String)
        else:
            user = select(ShopSession.user_id).where(ShopSession.id == bindparam("session_id")).scalar_subquery()
        # One IN over (this session, the user's sessions): a semi-join the (session_id, created_at) indexes serve.
        # (An OR of the two made PostgreSQL scan the whole event tables.)
        sessions = select(ShopSession.id).where(ShopSession.user_id == user)
        if has_session:
            sessions = sessions.union(select(cast(bindparam("session_id", type_=String), String)))

        def belongs(column: ColumnElement[str | None]) -> ColumnElement[bool]:
            return column.in_(sessions)

        def branch(kind: str, table, sku, value, where, created, sequence):  # type: ignore[no-untyped-def]
            inner = (
                select(
                    literal_column(f"'{kind}'", String).label("kind"),
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

        one = literal_column("1.0")
        views = branch(
            "view",
            ProductDetailEnter,
            ProductDetailEnter.product_variant_sku,
            one,
            belongs(ProductDetailEnter.session_id),
            ProductDetailEnter.created_at,
            ProductDetailEnter.id,
        )
        carts = branch(
            "cart",
            ProductAddToCart,
            ProductAddToCart.product_variant_sku,
            one,
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
            & ShopOrder.token.in_(
                select(ShopOrder.token)
                .where(belongs(ShopOrder.session_id))
                .union(select(ShopOrder.token).where(ShopOrder.user_id == user))
            ),
            ShopOrder.created_at,
            OrderLine.line_number,
        )
        reviews = branch(
            "review",
            Review,
            Review.product_variant_sku,
            Review.rating,
            Review.id.in_(
                select(Review.id)
                .where(belongs(Review.session_id))
                .union(select(Review.id).where(Review.user_id == user))
            ),
            Review.created_at,
            Review.id,
        )
        compiled = union_all(views, carts, orders, reviews).compile(compile_kwargs={"render_postcompile": False})
        return text(str(compiled)).columns(
            column("kind", String),
            column("session_id", String),
            column("sku", String),
            column("value", Float),
            column("created_at", DateTime),
            column("sequence", Integer),
        )

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
