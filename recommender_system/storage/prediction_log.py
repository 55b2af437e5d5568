"""The prediction log: one row per answered prediction plus its top positions, written in bulk.

Rows arrive in batches from the background writer (``managers/prediction_log.py``): one bulk insert of the log rows,
one of their items, and an upsert linking sessions to the users that requests named.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from recommender_system.storage import bulk
from recommender_system.storage.tables import PredictionLog, PredictionLogItem, ShopSession

LOGGED_ITEMS = 200
"""At most this many returned SKUs are kept in ``predicted_items`` (a long category listing is cut)."""
TOP_POSITIONS = 10
"""Positions below this get a ``prediction_log_item`` row (the dashboard's k)."""
LOG_COLUMNS = (
    "id",
    "created_at",
    "recommendation_type",
    "session_id",
    "user_id",
    "retrieval_model_name",
    "retrieval_model_identifier",
    "scoring_model_name",
    "scoring_model_identifier",
    "ordering_model_name",
    "retrieval_duration",
    "scoring_duration",
    "ordering_duration",
    "returned_count",
    "predicted_items",
)
ITEM_COLUMNS = ("prediction_id", "position", "product_variant_sku", "session_id", "created_at")


def _sqlite_datetime(value: datetime) -> str:
    """The text SQLAlchemy stores for a DateTime on SQLite (microseconds always present)."""
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")


@dataclass(frozen=True)
class PredictionRecord:
    """One answered prediction, as the pipeline hands it to the writer."""

    created_at: datetime
    recommendation_type: str
    session_id: str | None
    user_id: str | None
    retrieval_model_name: str | None
    retrieval_model_identifier: str | None
    scoring_model_name: str
    scoring_model_identifier: str
    ordering_model_name: str | None
    retrieval_duration: float
    scoring_duration: float
    ordering_duration: float
    skus: tuple[str, ...]


class PredictionLogStore:
    def insert_many(self, session: Session, records: Sequence[PredictionRecord]) -> list[int]:
        """Insert the records and their top positions; returns the new log ids in record order.

        The hot write of the service, so it skips SQLAlchemy's per-value processing: ids are allocated first (a
        PostgreSQL sequence; on SQLite the next rowids, which is safe because the caller holds the write lock of a
        ``write_session``), then PostgreSQL gets two ``COPY``s and SQLite two ``executemany`` of plain tuples.
        """
        if not records:
            return []
        postgres = bulk.is_postgresql(session)
        ids = self._allocate_ids(session, len(records), postgres)
        stamps = [r.created_at if postgres else _sqlite_datetime(r.created_at) for r in records]
        logs = [
            (
                prediction_id,
                created_at,
                r.recommendation_type,
                r.session_id,
                r.user_id,
                r.retrieval_model_name,
                r.retrieval_model_identifier,
                r.scoring_model_name,
                r.scoring_model_identifier,
                r.ordering_model_name,
                r.retrieval_duration,
                r.scoring_duration,
                r.ordering_duration,
                len(r.skus),
                json.dumps(list(r.skus[:LOGGED_ITEMS])),
            )
            for prediction_id, created_at, r in zip(ids, stamps, records, strict=True)
        ]
        items = [
            (prediction_id, position, sku, r.session_id, created_at)
            for prediction_id, created_at, r in zip(ids, stamps, records, strict=True)
            for position, sku in enumerate(r.skus[:TOP_POSITIONS])
        ]
        self._write(session, PredictionLog.__table__, LOG_COLUMNS, logs, postgres)
        self._write(session, PredictionLogItem.__table__, ITEM_COLUMNS, items, postgres)
        return ids

    @staticmethod
    def _allocate_ids(session: Session, count: int, postgres: bool) -> list[int]:
        if postgres:
            return list(
                session.scalars(
                    text(
                        "SELECT nextval(pg_get_serial_sequence('prediction_log', 'id')) FROM generate_series(1, :count)"
                    ),
                    {"count": count},
                )
            )
        first = int(session.scalar(select(func.coalesce(func.max(PredictionLog.id), 0)))) + 1
        return list(range(first, first + count))

    @staticmethod
    def _write(
        session: Session, table: Any, columns: tuple[str, ...], rows: list[tuple[Any, ...]], postgres: bool
    ) -> None:
        if not rows:
            return
        if postgres:
            bulk.insert(session, table, [dict(zip(columns, row, strict=True)) for row in rows])
            return
        placeholders = ", ".join("?" for _ in columns)
        session.connection().exec_driver_sql(
            f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({placeholders})", rows
        )

    def link_sessions(self, session: Session, links: Mapping[str, str], now: datetime) -> None:
        """Link each session to its user (creating the session row if needed; the newest link wins)."""
        if not links:
            return
        rows = [
            {"id": session_id, "user_id": user_id, "created_at": now, "updated_at": now}
            for session_id, user_id in links.items()
        ]
        dialect = session.get_bind().dialect.name
        upsert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(ShopSession)
        statement = upsert.on_conflict_do_update(
            index_elements=[ShopSession.id],
            set_={"user_id": upsert.excluded.user_id, "updated_at": upsert.excluded.updated_at},
            where=ShopSession.user_id.is_distinct_from(upsert.excluded.user_id),
        )
        session.execute(statement, rows)
