"""A shopper's history for one prediction: ONE query over views, cart adds, orders and reviews.

The shopper is the session, plus every session of its user: the user named by the request, else the user the
session is linked to (``shop_session.user_id``). Each kind of event is bounded to its newest ``limit`` rows, so the
query stays cheap for a shopper with a long past; every branch is served by a (session_id, created_at) index.

This is the one database round trip of a prediction, so it bypasses the ORM: each serving thread keeps its own
DBAPI connection in autocommit mode (no BEGIN/COMMIT, no pool checkout or pre-ping), and on PostgreSQL the query is
a prepared statement with a generic plan (planning it cost more than running it; ``_postgresql_statement``).
A connection that fails is dropped and the query retried once on a new one (a restarted database costs one failed
attempt).
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

from sqlalchemy import (
    Float,
    Integer,
    ScalarSelect,
    String,
    bindparam,
    cast,
    literal_column,
    select,
    union_all,
)
from sqlalchemy.sql.elements import ColumnElement

from recommender_system.domain import EMPTY_HISTORY, SessionHistory
from recommender_system.storage.database import Database
from recommender_system.storage.tables import (
    OrderLine,
    ProductAddToCart,
    ProductDetailEnter,
    Review,
    ShopOrder,
    ShopSession,
)

DEFAULT_LIMIT = 200


logger = logging.getLogger(__name__)

_PLACEHOLDER = re.compile(r":(session_id|user_id|limit)\b")


class _Shape:
    """One of the four statement shapes (session and/or user known), in the form the driver runs: SQLite's
    numbered ``?1``; on PostgreSQL ``EXECUTE`` of a statement prepared as ``$1`` (``prepared``), else plain
    text with named ``%(name)s`` parameters (behind a pooler that cannot keep prepared statements)."""

    def __init__(self, name: str, sql: str, postgresql: bool, prepared: bool = True) -> None:
        self.parameters = tuple(dict.fromkeys(_PLACEHOLDER.findall(sql)))  # in order of first use
        self.named = postgresql and not prepared
        self.prepare: str | None = None
        if self.named:
            self.sql = _PLACEHOLDER.sub(lambda m: f"%({m.group(1)})s", sql)
            return
        marker = "$" if postgresql else "?"  # PostgreSQL's $1 in PREPARE, SQLite's ?1
        numbered = _PLACEHOLDER.sub(lambda m: f"{marker}{self.parameters.index(m.group(1)) + 1}", sql)
        if postgresql:
            self.prepare = f"PREPARE {name} AS {numbered}"
            self.sql = f"EXECUTE {name} ({', '.join(['%s'] * len(self.parameters))})"
        else:
            self.sql = numbered

    def arguments(self, values: dict[str, object]) -> tuple[object, ...] | dict[str, object]:
        if self.named:
            return {name: values[name] for name in self.parameters}
        return tuple(values[name] for name in self.parameters)


class HistoryStore:
    def __init__(self, database: Database, prepared: bool = True) -> None:
        """``prepared``: on PostgreSQL, prepare the statements once per connection (turn it off behind a pooler in
        transaction mode, such as PgBouncer, where a connection's prepared statements do not follow the client)."""
        self._database = database
        self._postgresql = not database.is_sqlite
        self._prepared = prepared
        build = _postgresql_statement if self._postgresql else self._statement
        self._shapes = {
            (has_session, has_user): _Shape(
                f"rs_history_{int(has_session)}{int(has_user)}",
                build(has_session, has_user),
                self._postgresql,
                prepared,
            )
            for has_session in (False, True)
            for has_user in (False, True)
            if has_session or has_user
        }
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[Any] = []  # every thread's connection, closed by ``close``

    def load(self, session_id: str | None, user_id: str | None = None, limit: int = DEFAULT_LIMIT) -> SessionHistory:
        """The history of ``session_id`` and of its user's sessions, oldest first (the newest ``limit`` events of
        each kind). An anonymous request without a user has no history and costs no query."""
        if not session_id and not user_id:
            return EMPTY_HISTORY
        shape = self._shapes[(bool(session_id), bool(user_id))]
        arguments = shape.arguments({"session_id": session_id, "user_id": user_id, "limit": int(limit)})
        try:
            rows = self._fetch(shape, arguments)
        except self._database.engine.dialect.loaded_dbapi.Error:
            self._discard()  # a broken connection (a restarted server, a dropped socket): one retry on a new one
            rows = self._fetch(shape, arguments)
        return self._history(rows, session_id)

    def close(self) -> None:
        """Close every thread's connection (a clean shutdown); a later ``load`` opens a new one."""
        with self._lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            try:
                connection.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                logger.debug("closing a history connection failed", exc_info=True)
        self._local = threading.local()

    # --- connections ----------------------------------------------------------------------------------------------
    def _fetch(self, shape: _Shape, arguments: tuple[object, ...] | dict[str, object]) -> list[tuple[Any, ...]]:
        cursor = self._connection().cursor()
        try:
            cursor.execute(shape.sql, arguments)
            return cursor.fetchall()
        finally:
            cursor.close()

    def _connection(self) -> Any:
        held = getattr(self._local, "held", None)
        if held is not None:
            return held
        # a pool connection (the engine's connect-time setup applies), detached: this thread owns it from now on
        proxied = self._database.engine.raw_connection()
        proxied.detach()
        connection = proxied.dbapi_connection
        if self._postgresql:
            connection.autocommit = True
            if self._prepared:
                # one round trip: the parameters are not skewed, so each shape is planned once, generically
                setup = ["SET plan_cache_mode = force_generic_plan", *(s.prepare for s in self._shapes.values())]
                with connection.cursor() as cursor:
                    cursor.execute(";\n".join(str(statement) for statement in setup))
        else:
            connection.isolation_level = None  # autocommit: each query reads the newest committed data
        self._local.held = connection
        with self._lock:
            self._connections.append(connection)
        return connection

    def _discard(self) -> None:
        held = getattr(self._local, "held", None)
        self._local.held = None
        if held is None:
            return
        with self._lock:
            if held in self._connections:
                self._connections.remove(held)
        try:
            held.close()
        except Exception:  # noqa: BLE001 - it is broken already
            logger.debug("closing a broken history connection failed", exc_info=True)

    @staticmethod
    def _statement(has_session: bool, has_user: bool) -> str:
        """The union of the four bounded branches as portable SQL text with the named parameters ``:session_id``,
        ``:user_id`` and ``:limit``, columns ``kind, session_id, sku, value, created_at, sequence``."""
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
        return str(compiled)

    @staticmethod
    def _history(rows: list[tuple[Any, ...]], session_id: str | None) -> SessionHistory:
        """Rows are ``(kind, session_id, sku, value, created_at, sequence)``; ordered here by time, then sequence."""
        rows = sorted(rows, key=_time_then_sequence)
        visited: list[str] = []
        session_visited: list[str] = []
        carted: list[str] = []
        ordered: list[str] = []
        rated: list[tuple[str, float]] = []
        for kind, row_session, sku, value, _, _ in rows:
            if kind == "view":
                visited.append(sku)
                if session_id and row_session == session_id:
                    session_visited.append(sku)
            elif kind == "cart":
                carted.append(sku)
            elif kind == "order":
                ordered.append(sku)
            else:
                rated.append((sku, float(value)))
        if not (visited or carted or ordered or rated):
            return EMPTY_HISTORY
        return SessionHistory(
            visited=tuple(visited),
            session_visited=tuple(session_visited),
            carted=tuple(carted),
            ordered=tuple(ordered),
            rated=tuple(rated),
        )


def _time_then_sequence(row: tuple[Any, ...]) -> tuple[Any, Any]:
    return row[4], row[5]


def _postgresql_statement(has_session: bool, has_user: bool) -> str:
    """The same rows as ``HistoryStore._statement``, written for a plan that stays right for every shopper.

    It is prepared once with a generic plan, which knows neither the session nor how many events it has; with
    real statistics PostgreSQL then chose to walk the whole view table newest first. Here every event table is
    reached through a ``LATERAL`` index lookup per session (or per order, per user), so only those rows are read;
    ``OFFSET 0`` keeps the planner from flattening a lookup into a join that scans the table.
    """
    user = "CAST(:user_id AS VARCHAR)" if has_user else "(SELECT user_id FROM shop_session WHERE id = :session_id)"
    this_session = "UNION SELECT CAST(:session_id AS VARCHAR)" if has_session else ""

    def events(kind: str, table: str) -> str:
        return f"""(SELECT '{kind}' AS kind, e.session_id, e.product_variant_sku AS sku, CAST(1.0 AS FLOAT) AS value,
                e.created_at, e.id AS sequence
            FROM shopper_sessions AS s CROSS JOIN LATERAL (
                SELECT session_id, product_variant_sku, created_at, id FROM {table}
                WHERE session_id = s.id ORDER BY created_at DESC, id DESC LIMIT :limit) AS e
            ORDER BY e.created_at DESC, e.id DESC LIMIT :limit)"""

    return f"""WITH shopper AS MATERIALIZED (SELECT {user} AS user_id),
    shopper_sessions AS MATERIALIZED (
        SELECT id FROM shop_session WHERE user_id = (SELECT user_id FROM shopper) {this_session}),
    order_tokens AS MATERIALIZED (
        SELECT o.token FROM shopper_sessions AS s CROSS JOIN LATERAL (
            SELECT token FROM shop_order WHERE session_id = s.id OFFSET 0) AS o
        UNION SELECT token FROM shop_order WHERE user_id = (SELECT user_id FROM shopper)),
    review_ids AS MATERIALIZED (
        SELECT r.id FROM shopper_sessions AS s
        CROSS JOIN LATERAL (SELECT id FROM review WHERE session_id = s.id OFFSET 0) AS r
        UNION SELECT id FROM review WHERE user_id = (SELECT user_id FROM shopper))
{events("view", "product_detail_enter")}
UNION ALL
{events("cart", "product_add_to_cart")}
UNION ALL
(SELECT 'order', o.session_id, l.product_variant_sku, CAST(l.quantity AS FLOAT), o.created_at, l.line_number
    FROM order_tokens AS t CROSS JOIN LATERAL (
        SELECT token, session_id, created_at FROM shop_order WHERE token = t.token AND deleted IS FALSE OFFSET 0) AS o
    CROSS JOIN LATERAL (
        SELECT product_variant_sku, quantity, line_number FROM order_line WHERE order_token = o.token OFFSET 0) AS l
    ORDER BY o.created_at DESC, l.line_number DESC LIMIT :limit)
UNION ALL
(SELECT 'review', r.session_id, r.product_variant_sku, CAST(r.rating AS FLOAT), r.created_at, r.id
    FROM review_ids AS i CROSS JOIN LATERAL (
        SELECT session_id, product_variant_sku, rating, created_at, id FROM review WHERE id = i.id OFFSET 0) AS r
    ORDER BY r.created_at DESC, r.id DESC LIMIT :limit)"""
