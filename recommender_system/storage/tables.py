"""Typed SQLAlchemy 2 tables of the one database: catalogue, events, configuration, training and the prediction log.

Timestamps are stored as naive UTC (``utcnow()``), stamped by the service at arrival when the client sends none.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# BIGINT autoincrement on PostgreSQL, INTEGER (rowid alias) on SQLite
BigId = BigInteger().with_variant(Integer(), "sqlite")
Sku = String(255)
SessionKey = String(100)
UserKey = String(255)


def utcnow() -> datetime:
    """Now, as naive UTC (what every timestamp column holds)."""
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


# --------------------------------------------------------------------------------------------- catalogue
class AttributeType(Base):
    __tablename__ = "attribute_type"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    type: Mapped[str] = mapped_column(String(100), default="CATEGORICAL")
    type_name: Mapped[str | None] = mapped_column(String(200))
    unit: Mapped[str | None] = mapped_column(String(200))
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Attribute(Base):
    __tablename__ = "attribute"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    attribute_type_id: Mapped[int] = mapped_column(Integer, index=True)
    raw_value: Mapped[str | None] = mapped_column(String(200))
    numeric_value: Mapped[float | None] = mapped_column(Float)
    order: Mapped[int | None] = mapped_column(Integer)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class ProductType(Base):
    __tablename__ = "product_type"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    name: Mapped[str | None] = mapped_column(String(200))
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class ProductTypeAttributeType(Base):
    __tablename__ = "product_type_attribute_type"
    product_type_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    attribute_type_id: Mapped[int] = mapped_column(Integer, primary_key=True)


class Category(Base):
    __tablename__ = "category"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    parent_id: Mapped[int | None] = mapped_column(Integer, index=True)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class CategoryAncestor(Base):
    """Closure table: one row per (category, ancestor) pair, the category itself included (depth 0)."""

    __tablename__ = "category_ancestor"
    category_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ancestor_id: Mapped[int] = mapped_column(Integer, primary_key=True, index=True)
    depth: Mapped[int] = mapped_column(Integer, default=0)


class Product(Base):
    __tablename__ = "product"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    published: Mapped[bool] = mapped_column(Boolean, default=True)
    category_id: Mapped[int | None] = mapped_column(Integer, index=True)
    product_type_id: Mapped[int | None] = mapped_column(Integer)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class ProductTranslation(Base):
    __tablename__ = "product_translation"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    product_id: Mapped[int | None] = mapped_column(Integer, index=True)
    language_code: Mapped[str | None] = mapped_column(String(10))
    title: Mapped[str | None] = mapped_column(Text)
    meta_title: Mapped[str | None] = mapped_column(Text)
    meta_description: Mapped[str | None] = mapped_column(Text)
    short_description: Mapped[str | None] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    slug: Mapped[str | None] = mapped_column(Text)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)


class ProductVariant(Base):
    __tablename__ = "product_variant"
    sku: Mapped[str] = mapped_column(Sku, primary_key=True)
    ean: Mapped[str | None] = mapped_column(String(64))
    weight: Mapped[float | None] = mapped_column(Float)
    stock_quantity: Mapped[int] = mapped_column(Integer, default=0)
    recommendation_weight: Mapped[float] = mapped_column(Float, default=1.0)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class ProductProductVariant(Base):
    __tablename__ = "product_product_variant"
    product_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    product_variant_sku: Mapped[str] = mapped_column(Sku, primary_key=True, index=True)


class VariantAttribute(Base):
    __tablename__ = "variant_attribute"
    product_variant_sku: Mapped[str] = mapped_column(Sku, primary_key=True)
    attribute_id: Mapped[int] = mapped_column(Integer, primary_key=True, index=True)


class ProductPrice(Base):
    __tablename__ = "product_price"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    price_list_code: Mapped[str] = mapped_column(String(200))
    product_variant_sku: Mapped[str | None] = mapped_column(Sku, index=True)
    price: Mapped[float] = mapped_column(Float)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class ShopOrder(Base):
    __tablename__ = "shop_order"
    token: Mapped[str] = mapped_column(String(36), primary_key=True)
    session_id: Mapped[str | None] = mapped_column(SessionKey, index=True)
    user_id: Mapped[str | None] = mapped_column(UserKey, index=True)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class OrderLine(Base):
    __tablename__ = "order_line"
    order_token: Mapped[str] = mapped_column(
        String(36), ForeignKey("shop_order.token", ondelete="CASCADE"), primary_key=True
    )
    line_number: Mapped[int] = mapped_column(Integer, primary_key=True)
    product_variant_sku: Mapped[str] = mapped_column(Sku, index=True)
    quantity: Mapped[int] = mapped_column(Integer, default=1)


class DataRevision(Base):
    """Monotonic counters that web processes poll (one cheap query) to know when to rebuild in-memory views.

    Rows: ``catalog`` (any catalogue write), ``orders`` (orders, for popularity), ``config`` (a new config),
    ``models`` (a published or rolled-back version).
    """

    __tablename__ = "data_revision"
    name: Mapped[str] = mapped_column(String(50), primary_key=True)
    revision: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


# ------------------------------------------------------------------------------------------------ events
class ShopSession(Base):
    """A storefront session; ``user_id`` links it to a user once any event or request names one."""

    __tablename__ = "shop_session"
    id: Mapped[str] = mapped_column(SessionKey, primary_key=True)
    user_id: Mapped[str | None] = mapped_column(UserKey, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class ProductDetailEnter(Base):
    __tablename__ = "product_detail_enter"
    __table_args__ = (
        Index("ix_product_detail_enter_session_created", "session_id", "created_at"),
        Index("ix_product_detail_enter_model_created", "model_name", "created_at"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(SessionKey)
    user_id: Mapped[str | None] = mapped_column(UserKey)
    product_id: Mapped[int | None] = mapped_column(Integer)
    product_variant_sku: Mapped[str] = mapped_column(Sku)
    recommendation_type: Mapped[str | None] = mapped_column(String(100))
    model_name: Mapped[str | None] = mapped_column(String(100))
    model_identifier: Mapped[str | None] = mapped_column(String(255))
    position: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)


class ProductDetailLeave(Base):
    __tablename__ = "product_detail_leave"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(SessionKey, index=True)
    user_id: Mapped[str | None] = mapped_column(UserKey)
    product_id: Mapped[int | None] = mapped_column(Integer)
    product_variant_sku: Mapped[str] = mapped_column(Sku)
    time_spent: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)


class ProductAddToCart(Base):
    __tablename__ = "product_add_to_cart"
    __table_args__ = (Index("ix_product_add_to_cart_session_created", "session_id", "created_at"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(SessionKey)
    user_id: Mapped[str | None] = mapped_column(UserKey)
    product_id: Mapped[int | None] = mapped_column(Integer)
    product_variant_sku: Mapped[str] = mapped_column(Sku)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)


class RecommendationView(Base):
    __tablename__ = "recommendation_view"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(SessionKey, index=True)
    user_id: Mapped[str | None] = mapped_column(UserKey)
    product_id: Mapped[int | None] = mapped_column(Integer)
    product_variant_sku: Mapped[str] = mapped_column(Sku)
    recommendation_type: Mapped[str] = mapped_column(String(100))
    model_identifier: Mapped[str] = mapped_column(String(255))
    position: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)


class Review(Base):
    __tablename__ = "review"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    session_id: Mapped[str] = mapped_column(SessionKey, index=True)
    user_id: Mapped[str | None] = mapped_column(UserKey, index=True)
    product_id: Mapped[int | None] = mapped_column(Integer)
    product_variant_sku: Mapped[str] = mapped_column(Sku)
    rating: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


# -------------------------------------------------------------------------------- configuration, training
class ConfigVersion(Base):
    """One saved ``PipelineConfig``; the newest row (greatest id) is in force."""

    __tablename__ = "config_version"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)


class TrainingJob(Base):
    """A request to train one model. ``pending`` jobs are claimed by a trainer; at most one pending job per model
    (duplicate requests coalesce onto it)."""

    __tablename__ = "training_job"
    __table_args__ = (
        Index(
            "uq_training_job_pending_model",
            "model_name",
            unique=True,
            sqlite_where=text("status = 'pending'"),
            postgresql_where=text("status = 'pending'"),
        ),
        Index("ix_training_job_status_available", "status", "available_at"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    model_name: Mapped[str] = mapped_column(String(50))
    reason: Mapped[str] = mapped_column(String(200), default="requested")
    status: Mapped[str] = mapped_column(String(20), default="pending")  # pending | running | done | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    available_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)


class TrainingRun(Base):
    """One execution of a training job, with what ecoseller's training page shows."""

    __tablename__ = "training_run"
    __table_args__ = (Index("ix_training_run_model_started", "model_name", "started_at"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    model_name: Mapped[str] = mapped_column(String(50))
    version: Mapped[str | None] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(20), default="running")  # running | completed | failed
    started_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    duration: Mapped[float | None] = mapped_column(Float)
    peak_memory_mb: Mapped[float | None] = mapped_column(Float)
    peak_memory_percentage: Mapped[float | None] = mapped_column(Float)
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text)


class ModelVersionRow(Base):
    """A published artefact of a trained model (its files live under ``RS_ARTEFACT_DIR/<model>/<version>/``)."""

    __tablename__ = "model_version"
    __table_args__ = (Index("uq_model_version_model_version", "model_name", "version", unique=True),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    model_name: Mapped[str] = mapped_column(String(50))
    version: Mapped[str] = mapped_column(String(100))
    path: Mapped[str] = mapped_column(Text)
    run_id: Mapped[int | None] = mapped_column(BigInteger)
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    removed: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class CurrentModel(Base):
    """Which version of each trained model is served."""

    __tablename__ = "current_model"
    model_name: Mapped[str] = mapped_column(String(50), primary_key=True)
    version: Mapped[str] = mapped_column(String(100))
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


# -------------------------------------------------------------------------------------- prediction log
class PredictionLog(Base):
    """One answered prediction. ``hit``/``future_hit`` are filled in by the monitoring aggregation."""

    __tablename__ = "prediction_log"
    __table_args__ = (
        Index("ix_prediction_log_created", "created_at"),
        Index("ix_prediction_log_scoring_created", "scoring_model_name", "created_at"),
        Index("ix_prediction_log_session_created", "session_id", "created_at"),
        # monitoring: hits counted per window/model from the few hit rows; predictions not yet evaluated
        Index(
            "ix_prediction_log_hit",
            "created_at",
            "scoring_model_name",
            "recommendation_type",
            sqlite_where=text("hit = 1"),
            postgresql_where=text("hit = true"),
        ),
        Index(
            "ix_prediction_log_future_hit",
            "created_at",
            "scoring_model_name",
            "recommendation_type",
            sqlite_where=text("future_hit = 1"),
            postgresql_where=text("future_hit = true"),
        ),
        Index(
            "ix_prediction_log_pending",
            "created_at",
            sqlite_where=text("future_hit IS NULL"),
            postgresql_where=text("future_hit IS NULL"),
        ),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    recommendation_type: Mapped[str] = mapped_column(String(30))
    session_id: Mapped[str | None] = mapped_column(SessionKey)
    user_id: Mapped[str | None] = mapped_column(UserKey)
    retrieval_model_name: Mapped[str | None] = mapped_column(String(50))
    retrieval_model_identifier: Mapped[str | None] = mapped_column(String(150))
    scoring_model_name: Mapped[str] = mapped_column(String(50))
    scoring_model_identifier: Mapped[str] = mapped_column(String(150))
    ordering_model_name: Mapped[str | None] = mapped_column(String(50))
    retrieval_duration: Mapped[float] = mapped_column(Float, default=0.0)
    scoring_duration: Mapped[float] = mapped_column(Float, default=0.0)
    ordering_duration: Mapped[float] = mapped_column(Float, default=0.0)
    returned_count: Mapped[int] = mapped_column(Integer, default=0)
    predicted_items: Mapped[list[Any]] = mapped_column(JSON, default=list)
    """The returned SKUs, best first (at most the first 200 of a long category listing)."""
    hit: Mapped[bool | None] = mapped_column(Boolean)
    future_hit: Mapped[bool | None] = mapped_column(Boolean)


class PredictionLogItem(Base):
    """The top positions (< 10, the dashboard's k) of each logged prediction, for hit rate and coverage.

    ``prediction_id`` is the ``prediction_log.id`` the rows were written with, in the same transaction by the one
    writer (``PredictionLogStore.insert_many``). It has no foreign key on purpose: PostgreSQL checked it once per
    row with a plan cached while the log was empty, a sequential scan that grew with the log and came to cost
    more CPU than the predictions themselves. Whatever deletes log rows deletes their items too."""

    __tablename__ = "prediction_log_item"
    __table_args__ = (Index("ix_prediction_log_item_session_sku", "session_id", "product_variant_sku"),)
    prediction_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    product_variant_sku: Mapped[str] = mapped_column(Sku)
    session_id: Mapped[str | None] = mapped_column(SessionKey)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)


# ------------------------------------------------------------------------------------------------ monitoring
class MonitoringRollup(Base):
    """Per-hour and per-day aggregates of the prediction log: one row per (period, bucket start, page, scoring
    model, retrieval model), ``period`` being ``"hour"`` or ``"day"``.

    Filled incrementally by the monitoring aggregation (``storage/monitoring.py``) so that a dashboard call never
    scans the whole log. ``sku_bitmap`` is the zlib-compressed bit set (over ``monitoring_sku.id``) of the SKUs at
    positions < 10 of those predictions, for coverage. ``retrieval_model_name`` is ``""`` when there was none.
    """

    __tablename__ = "monitoring_rollup"
    period: Mapped[str] = mapped_column(String(4), primary_key=True)
    bucket: Mapped[datetime] = mapped_column(DateTime, primary_key=True)
    recommendation_type: Mapped[str] = mapped_column(String(30), primary_key=True)
    scoring_model_name: Mapped[str] = mapped_column(String(50), primary_key=True)
    retrieval_model_name: Mapped[str] = mapped_column(String(50), primary_key=True)
    predictions: Mapped[int] = mapped_column(BigInteger, default=0)
    retrieval_duration_sum: Mapped[float] = mapped_column(Float, default=0.0)
    retrieval_duration_max: Mapped[float] = mapped_column(Float, default=0.0)
    scoring_duration_sum: Mapped[float] = mapped_column(Float, default=0.0)
    scoring_duration_max: Mapped[float] = mapped_column(Float, default=0.0)
    ordering_duration_sum: Mapped[float] = mapped_column(Float, default=0.0)
    ordering_duration_max: Mapped[float] = mapped_column(Float, default=0.0)
    sku_bitmap: Mapped[bytes] = mapped_column(LargeBinary)


class MonitoringSku(Base):
    """A small, stable integer for every SKU that ever appeared in a prediction (the bit of ``sku_bitmap``)."""

    __tablename__ = "monitoring_sku"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sku: Mapped[str] = mapped_column(Sku, unique=True)


class MonitoringWatermark(Base):
    """How far the monitoring aggregation got: the last rolled-up prediction id, the last evaluated view id."""

    __tablename__ = "monitoring_watermark"
    name: Mapped[str] = mapped_column(String(50), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
