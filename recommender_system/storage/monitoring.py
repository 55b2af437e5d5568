"""Monitoring queries: the incremental aggregation of the prediction log and the figures of a time window.

Definitions (k = 10, positions 0..9; CONTRACT section 5, fixing the faults of notes 5 and 8-A10):

- A prediction is a **hit** when the session's *next* product-detail view after it is one of its top-k SKUs. The
  next view is the first view of the session at or after the prediction, together with the views that arrive
  within ``CLICK_GROUP`` of it (the ecoseller storefront sends one view per variant of the clicked product). When
  such a view carries attribution (``model_name``, ``recommendation_type``, ``position`` copied from ``rs_info``),
  it only counts for a prediction of that scoring model, that page type and a position < k; views without
  attribution (what the live backend always sends) count by matching the SKU alone.
- A prediction is a **future hit** when any view of the same session after it (within ``SESSION_HORIZON``) is one
  of its top-k SKUs.
- **Coverage**: the live variants (not deleted; of a published, not deleted product, or of no known product) that
  appeared at positions < k of the window's predictions, over all live variants.
- Per-model figures count that model's predictions only: the scoring model for hits, coverage, counts, scoring and
  ordering durations; the retrieval model for retrieval durations.

How it stays fast on a large log:

- ``monitoring_rollup`` holds per-hour and per-day sums (counts, duration sums and maxima, a bit set of the top-k
  SKUs) of every prediction up to a watermark id, one row per page type, scoring and retrieval model. A window
  reads the daily rows of its whole days, the hourly rows of its other whole hours, and the raw log only for its
  two partial edge hours and for the predictions logged after the watermark (the last minute or so).
- ``prediction_log.hit`` / ``future_hit`` are filled in once per prediction, driven by what is new since the last
  run (new views, new predictions): the sessions concerned are re-evaluated, nothing else. A prediction whose
  session shows no view within ``SESSION_HORIZON`` is then settled as a miss. Hits are counted through partial
  indexes on the (few) hit rows.
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
import zlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import numpy as np
from sqlalchemy import (
    ColumnElement,
    and_,
    delete,
    distinct,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    true,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from recommender_system.storage import revisions
from recommender_system.storage.tables import (
    MonitoringRollup,
    MonitoringSku,
    MonitoringWatermark,
    OrderLine,
    PredictionLog,
    PredictionLogItem,
    Product,
    ProductAddToCart,
    ProductDetailEnter,
    ProductProductVariant,
    ProductVariant,
    Review,
    TrainingRun,
    utcnow,
)

logger = logging.getLogger(__name__)

K = 10
"""The dashboard's k: positions 0..9 (``prediction_log_item`` keeps exactly these)."""
SESSION_HORIZON = timedelta(hours=24)
"""Views later than this after a prediction no longer count for it; unevaluated predictions older than this are
settled (no view: a miss)."""
CLICK_GROUP = timedelta(seconds=2)
"""Views arriving this close after the next view belong to the same click (one view per variant)."""
ROLLUP_LAG = timedelta(seconds=60)
"""Predictions younger than this are not rolled up yet (log writes still in flight); the window reads them raw."""

ROLLED_PREDICTION = "rollup_prediction_id"
EVALUATED_VIEW = "evaluated_view_id"
_LOCK_KEY = 0x5253_4D4F  # pg advisory lock of the aggregation ("RSMO")
_IN_CHUNK = 500


# ------------------------------------------------------------------------------------------------ bit sets
def encode_ids(ids: Iterable[int]) -> bytes:
    """A set of small non-negative integers as a compressed bit set."""
    array = np.fromiter(ids, dtype=np.int64)
    if array.size == 0:
        return zlib.compress(b"")
    mask = np.zeros(int(array.max()) + 1, dtype=bool)
    mask[array] = True
    return zlib.compress(np.packbits(mask).tobytes())


def decode_ids(blob: bytes | None) -> np.ndarray:
    """The integers of a bit set made by ``encode_ids`` (sorted)."""
    if not blob:
        return np.empty(0, dtype=np.int64)
    raw = zlib.decompress(blob)
    if not raw:
        return np.empty(0, dtype=np.int64)
    return np.flatnonzero(np.unpackbits(np.frombuffer(raw, dtype=np.uint8))).astype(np.int64)


# ------------------------------------------------------------------------------------------------ helpers
def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def _hour_expr(session: Session, column: Any) -> ColumnElement[Any]:
    if _dialect(session) == "postgresql":
        return func.date_trunc("hour", column)
    return func.strftime("%Y-%m-%d %H:00:00", column)


def _as_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value.replace(tzinfo=None)
    return datetime.fromisoformat(str(value))


def floor_hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def ceil_hour(moment: datetime) -> datetime:
    floored = floor_hour(moment)
    return floored if floored == moment else floored + timedelta(hours=1)


def bucket_start(moment: datetime, bucket: str | None) -> datetime | None:
    """The start of the hour or (UTC) day ``moment`` falls in; None when not bucketing."""
    if bucket is None:
        return None
    if bucket == "day":
        return moment.replace(hour=0, minute=0, second=0, microsecond=0)
    return floor_hour(moment)


PERIODS = ("hour", "day")

_SUM_COLUMNS = (
    func.count(),
    func.sum(PredictionLog.retrieval_duration),
    func.max(PredictionLog.retrieval_duration),
    func.sum(PredictionLog.scoring_duration),
    func.max(PredictionLog.scoring_duration),
    func.sum(PredictionLog.ordering_duration),
    func.max(PredictionLog.ordering_duration),
)
_ROLLUP_COLUMNS = (
    MonitoringRollup.period,
    MonitoringRollup.bucket,
    MonitoringRollup.recommendation_type,
    MonitoringRollup.scoring_model_name,
    MonitoringRollup.retrieval_model_name,
    MonitoringRollup.predictions,
    MonitoringRollup.retrieval_duration_sum,
    MonitoringRollup.retrieval_duration_max,
    MonitoringRollup.scoring_duration_sum,
    MonitoringRollup.scoring_duration_max,
    MonitoringRollup.ordering_duration_sum,
    MonitoringRollup.ordering_duration_max,
    MonitoringRollup.sku_bitmap,
)


def _id_list(session: Session) -> ColumnElement[Any]:
    """The distinct monitoring ids of a group's SKUs as one value (an array, or a comma list on SQLite)."""
    if _dialect(session) == "postgresql":
        return func.array_agg(distinct(MonitoringSku.id))
    return func.group_concat(distinct(MonitoringSku.id))


def _parse_ids(value: Any) -> np.ndarray:
    if value is None or value == "":
        return np.empty(0, dtype=np.int64)
    if isinstance(value, str):
        return np.array([int(part) for part in value.split(",")], dtype=np.int64)
    return np.asarray(value, dtype=np.int64)


def _max(a: float, b: float | None) -> float:
    return a if b is None or a >= b else float(b)


@dataclass
class _Sums:
    """What a rollup row holds, while it is being merged."""

    predictions: int
    retrieval_sum: float
    retrieval_max: float
    scoring_sum: float
    scoring_max: float
    ordering_sum: float
    ordering_max: float
    ids: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))

    @classmethod
    def of(cls, values: Sequence[Any], ids: np.ndarray | None = None) -> _Sums:
        numbers = [float(v or 0.0) for v in values[1:7]]
        return cls(int(values[0]), *numbers, ids=np.empty(0, dtype=np.int64) if ids is None else ids)

    def copy(self) -> _Sums:
        return dataclasses.replace(self, ids=self.ids.copy())

    def merge(self, other: _Sums) -> None:
        self.predictions += other.predictions
        self.retrieval_sum += other.retrieval_sum
        self.retrieval_max = _max(self.retrieval_max, other.retrieval_max)
        self.scoring_sum += other.scoring_sum
        self.scoring_max = _max(self.scoring_max, other.scoring_max)
        self.ordering_sum += other.ordering_sum
        self.ordering_max = _max(self.ordering_max, other.ordering_max)
        self.ids = np.union1d(self.ids, other.ids)

    def columns(self) -> dict[str, Any]:
        return {
            "predictions": self.predictions,
            "retrieval_duration_sum": self.retrieval_sum,
            "retrieval_duration_max": self.retrieval_max,
            "scoring_duration_sum": self.scoring_sum,
            "scoring_duration_max": self.scoring_max,
            "ordering_duration_sum": self.ordering_sum,
            "ordering_duration_max": self.ordering_max,
            "sku_bitmap": encode_ids(self.ids),
        }


def floor_day(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def ceil_day(moment: datetime) -> datetime:
    floored = floor_day(moment)
    return floored if floored == moment else floored + timedelta(days=1)


def rollup_plan(
    date_from: datetime, date_to: datetime, bucket: str | None
) -> tuple[list[tuple[str, datetime, datetime]], tuple[datetime, datetime] | None]:
    """Which rollup rows cover ``[date_from, date_to]``: whole days from daily rows (unless bucketing by hour),
    the other whole hours from hourly rows. Returns those ranges and the span they cover (None: read all raw)."""
    first_hour, last_hour = ceil_hour(date_from), floor_hour(date_to)
    if first_hour >= last_hour:
        return [], None
    if bucket != "hour":
        first_day, last_day = ceil_day(date_from), floor_day(date_to)
        if first_day < last_day:
            ranges = [("day", first_day, last_day)]
            if first_hour < first_day:
                ranges.append(("hour", first_hour, first_day))
            if last_day < last_hour:
                ranges.append(("hour", last_day, last_hour))
            return ranges, (first_hour, last_hour)
    return [("hour", first_hour, last_hour)], (first_hour, last_hour)


class Key(NamedTuple):
    """What a rollup row or a raw aggregate row is about."""

    bucket: datetime | None
    page: str
    scoring: str
    retrieval: str


@dataclass
class Durations:
    count: int = 0
    total: float = 0.0
    maximum: float | None = None

    def add(self, count: int, total: float, maximum: float | None) -> None:
        self.count += count
        self.total += total
        if maximum is not None and (self.maximum is None or maximum > self.maximum):
            self.maximum = maximum

    @property
    def average(self) -> float | None:
        return self.total / self.count if self.count else None


@dataclass
class GroupFigures:
    """The figures of one group of predictions (all of them, one model, one page type...) in a window."""

    predictions: int = 0
    hits: int = 0
    future_hits: int = 0
    covered: int = 0
    retrieval: Durations = field(default_factory=Durations)
    scoring: Durations = field(default_factory=Durations)
    ordering: Durations = field(default_factory=Durations)


@dataclass(frozen=True)
class WindowFigures:
    """Figures of a window by grouping: ``groups["model"][(bucket, "ease")]`` etc.

    Groupings: ``general`` (key: bucket), ``model`` (bucket, scoring model), ``page`` (bucket, page type),
    ``retrieval`` (bucket, retrieval model; only its retrieval durations mean anything). Bucket is None unless
    bucketed by hour or day.
    """

    live_variants: int
    groups: dict[str, dict[tuple[Any, ...], GroupFigures]]


GROUPINGS = ("general", "model", "page", "retrieval")


def _group_keys(key: Key) -> dict[str, tuple[Any, ...]]:
    return {
        "general": (key.bucket,),
        "model": (key.bucket, key.scoring),
        "page": (key.bucket, key.page),
        "retrieval": (key.bucket, key.retrieval),
    }


class _Coverage:
    """Live variants in an index space of their own, and per-group masks of the ones seen."""

    def __init__(self, live: Sequence[tuple[str, int | None]]) -> None:
        self.size = len(live)
        self.sku_to_live = {sku: index for index, (sku, _id) in enumerate(live)}
        known = [(index, mid) for index, (_sku, mid) in enumerate(live) if mid is not None]
        top = max((mid for _index, mid in known), default=-1)
        self.id_to_live = np.full(top + 1, -1, dtype=np.int64)
        for index, mid in known:
            self.id_to_live[mid] = index
        self.masks: dict[tuple[str, tuple[Any, ...]], np.ndarray] = {}

    def live_from_ids(self, ids: np.ndarray) -> np.ndarray:
        ids = ids[ids < self.id_to_live.size]
        mapped = self.id_to_live[ids]
        return mapped[mapped >= 0]

    def mark(self, grouping: str, group: tuple[Any, ...], live_indices: np.ndarray) -> None:
        if live_indices.size == 0:
            self.masks.setdefault((grouping, group), np.zeros(self.size, dtype=bool))
            return
        mask = self.masks.get((grouping, group))
        if mask is None:
            mask = self.masks[(grouping, group)] = np.zeros(self.size, dtype=bool)
        mask[live_indices] = True

    def covered(self, grouping: str, group: tuple[Any, ...]) -> int:
        mask = self.masks.get((grouping, group))
        return 0 if mask is None else int(mask.sum())


@dataclass(frozen=True)
class TrainingAggregate:
    model_name: str
    status: str
    runs: int
    duration_sum: float
    duration_count: int
    duration_max: float | None
    memory_sum: float
    memory_count: int
    memory_max: float | None
    memory_pct_sum: float
    memory_pct_count: int
    memory_pct_max: float | None


@dataclass(frozen=True)
class DataCounts:
    """What readiness for training depends on."""

    live_variants: int
    views: int
    carts: int
    order_lines: int
    reviews: int

    @property
    def events(self) -> int:
        return self.views + self.carts + self.order_lines + self.reviews


@dataclass
class _Pending:
    id: int
    session_id: str
    created_at: datetime
    scoring: str
    page: str
    hit: bool | None


@dataclass(frozen=True)
class _View:
    created_at: datetime
    sku: str
    model_name: str | None
    page: str | None
    position: int | None


def _attributed_to(view: _View, prediction: _Pending) -> bool:
    """May this view count as a click on this prediction's recommendations?"""
    if not view.model_name:
        return True  # no attribution (the live ecoseller backend never sends it): the SKU match decides
    if view.model_name != prediction.scoring:
        return False
    if view.page and view.page.upper() != prediction.page:
        return False
    return view.position is None or 0 <= view.position < K


class MonitoringStore:
    """Stateless; every method works inside the caller's unit of work."""

    # --- aggregation state -------------------------------------------------------------------------------------
    def watermark(self, session: Session, name: str) -> int:
        value = session.scalar(select(MonitoringWatermark.value).where(MonitoringWatermark.name == name))
        return int(value or 0)

    def set_watermark(self, session: Session, name: str, value: int) -> None:
        updated = session.execute(
            update(MonitoringWatermark)
            .where(MonitoringWatermark.name == name)
            .values(value=value, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        if updated.rowcount == 0:  # type: ignore[attr-defined]
            session.add(MonitoringWatermark(name=name, value=value, updated_at=utcnow()))
            session.flush()

    def try_lock(self, session: Session) -> bool:
        """Only one aggregation at a time across processes. PostgreSQL: a transaction-scoped advisory lock;
        SQLite: the caller's write session already holds the database's write lock."""
        if _dialect(session) == "postgresql":
            return bool(session.scalar(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": _LOCK_KEY}))
        return True

    # --- rollup ------------------------------------------------------------------------------------------------
    def rollup_step(self, session: Session, now: datetime, chunk: int = 50_000) -> tuple[int, list[str], bool]:
        """Fold the next predictions after the watermark (older than ``ROLLUP_LAG``) into the hourly and daily
        rollup rows.

        Returns (predictions folded, their sessions, whether everything foldable is done)."""
        conn = session.connection()
        low = self.watermark(session, ROLLED_PREDICTION)
        nxt = (
            select(PredictionLog.id, PredictionLog.created_at)
            .where(PredictionLog.id > low)
            .order_by(PredictionLog.id)
            .limit(chunk)
            .subquery()
        )
        high, count = conn.execute(select(func.max(nxt.c.id), func.count()).select_from(nxt)).one()
        if not count:
            return 0, [], True
        too_young = conn.execute(select(func.min(nxt.c.id)).where(nxt.c.created_at >= now - ROLLUP_LAG)).scalar()
        blocked = too_young is not None
        high = int(too_young) - 1 if blocked else int(high)
        if high <= low:
            return 0, [], True
        in_range = and_(PredictionLog.id > low, PredictionLog.id <= high)
        hour = _hour_expr(session, PredictionLog.created_at).label("hour")
        retrieval = func.coalesce(PredictionLog.retrieval_model_name, "").label("retrieval")
        keys = (hour, PredictionLog.recommendation_type, PredictionLog.scoring_model_name, retrieval)
        fresh: dict[tuple[str, datetime, str, str, str], _Sums] = {}

        def add(key: tuple[datetime, str, str, str], sums: _Sums) -> None:
            for period in PERIODS:
                start = bucket_start(key[0], period)
                assert start is not None
                target = fresh.get((period, start, *key[1:]))
                if target is None:
                    fresh[(period, start, *key[1:])] = sums.copy()
                else:
                    target.merge(sums)

        hour_sums = {
            (_as_datetime(row[0]), row[1], row[2], row[3]): _Sums.of(row[4:11])
            for row in conn.execute(select(*keys, *_SUM_COLUMNS).where(in_range).group_by(*keys))
        }
        self._register_skus(session, in_range)
        joined = (
            select(*keys, _id_list(session))
            .select_from(PredictionLog)
            .join(PredictionLogItem, PredictionLogItem.prediction_id == PredictionLog.id)
            .join(MonitoringSku, MonitoringSku.sku == PredictionLogItem.product_variant_sku)
            .where(in_range, PredictionLogItem.position < K)
            .group_by(*keys)
        )
        for row in conn.execute(joined):
            key = (_as_datetime(row[0]), row[1], row[2], row[3])
            if key in hour_sums:
                hour_sums[key].ids = _parse_ids(row[4])
        folded = 0
        for key, sums in hour_sums.items():
            folded += sums.predictions
            add(key, sums)
        self._merge_into_rollup(session, fresh)
        self.set_watermark(session, ROLLED_PREDICTION, high)
        sessions = list(
            conn.execute(
                select(PredictionLog.session_id).where(in_range, PredictionLog.session_id.is_not(None)).distinct()
            ).scalars()
        )
        return folded, sessions, blocked or count < chunk

    def _merge_into_rollup(self, session: Session, fresh: dict[tuple[str, datetime, str, str, str], _Sums]) -> None:
        """Add ``fresh`` sums to the stored rows of the same keys (rows of the touched buckets are rewritten)."""
        conn = session.connection()
        touched: dict[str, list[datetime]] = defaultdict(list)
        for period, start, *_rest in fresh:
            touched[period].append(start)
        for period, starts in touched.items():
            unique = sorted(set(starts))
            for low in range(0, len(unique), _IN_CHUNK):
                part = unique[low : low + _IN_CHUNK]
                where = and_(MonitoringRollup.period == period, MonitoringRollup.bucket.in_(part))
                for row in conn.execute(select(*_ROLLUP_COLUMNS).where(where)):
                    key = (row[0], row[1], row[2], row[3], row[4])
                    stored = _Sums.of(row[5:12], decode_ids(row[12]))
                    if key in fresh:
                        fresh[key].merge(stored)
                    else:
                        fresh[key] = stored
                conn.execute(delete(MonitoringRollup).where(where))
        rows = [
            {
                "period": period,
                "bucket": start,
                "recommendation_type": page,
                "scoring_model_name": scoring,
                "retrieval_model_name": retrieval,
                **sums.columns(),
            }
            for (period, start, page, scoring, retrieval), sums in fresh.items()
        ]
        for low in range(0, len(rows), 1000):
            conn.execute(insert(MonitoringRollup), rows[low : low + 1000])

    def _register_skus(self, session: Session, in_range: ColumnElement[bool]) -> None:
        """Give every SKU at positions < k of these predictions its small integer (new ones are inserted)."""
        known = select(MonitoringSku.id).where(MonitoringSku.sku == PredictionLogItem.product_variant_sku)
        source = (  # only the new ones: a conflicting insert would still use up a sequence value (ids stay dense)
            select(PredictionLogItem.product_variant_sku)
            .join(PredictionLog, PredictionLog.id == PredictionLogItem.prediction_id)
            .where(in_range, PredictionLogItem.position < K, ~exists(known))
            .distinct()
        )
        dialect_insert = postgresql.insert if _dialect(session) == "postgresql" else sqlite.insert
        statement = (
            dialect_insert(MonitoringSku).from_select(["sku"], source).on_conflict_do_nothing(index_elements=["sku"])
        )
        session.connection().execute(statement)

    # --- hit evaluation ----------------------------------------------------------------------------------------
    def new_view_sessions(self, session: Session, chunk: int = 20_000) -> tuple[list[str], int, int, bool]:
        """Sessions of the next (at most ``chunk``) views after the view watermark.

        Returns (sessions, number of views, the last view id, whether no views are left after it)."""
        low = self.watermark(session, EVALUATED_VIEW)
        nxt = (
            select(ProductDetailEnter.id, ProductDetailEnter.session_id)
            .where(ProductDetailEnter.id > low)
            .order_by(ProductDetailEnter.id)
            .limit(chunk)
            .subquery()
        )
        conn = session.connection()
        high, count = conn.execute(select(func.max(nxt.c.id), func.count()).select_from(nxt)).one()
        if not count:
            return [], 0, low, True
        sessions = list(conn.execute(select(nxt.c.session_id).distinct()).scalars())
        return sessions, int(count), int(high), count < chunk

    def evaluate_sessions(self, session: Session, session_ids: Sequence[str]) -> int:
        """Evaluate the unsettled predictions of these sessions against their views; returns how many changed."""
        changed = 0
        unique = sorted(set(session_ids))
        for start in range(0, len(unique), _IN_CHUNK):
            changed += self._evaluate_chunk(session, unique[start : start + _IN_CHUNK])
        return changed

    def _evaluate_chunk(self, session: Session, session_ids: list[str]) -> int:
        conn = session.connection()
        pending = [
            _Pending(*row)
            for row in conn.execute(
                select(
                    PredictionLog.id,
                    PredictionLog.session_id,
                    PredictionLog.created_at,
                    PredictionLog.scoring_model_name,
                    PredictionLog.recommendation_type,
                    PredictionLog.hit,
                ).where(PredictionLog.session_id.in_(session_ids), PredictionLog.future_hit.is_(None))
            )
        ]
        if not pending:
            return 0
        since = min(p.created_at for p in pending)
        views: dict[str, list[_View]] = defaultdict(list)
        for row in conn.execute(
            select(
                ProductDetailEnter.session_id,
                ProductDetailEnter.created_at,
                ProductDetailEnter.product_variant_sku,
                ProductDetailEnter.model_name,
                ProductDetailEnter.recommendation_type,
                ProductDetailEnter.position,
            )
            .where(ProductDetailEnter.session_id.in_(session_ids), ProductDetailEnter.created_at >= since)
            .order_by(ProductDetailEnter.session_id, ProductDetailEnter.created_at, ProductDetailEnter.id)
        ):
            views[row[0]].append(_View(*row[1:]))
        times = {sid: [v.created_at for v in vs] for sid, vs in views.items()}
        after: dict[int, list[_View]] = {}
        for p in pending:
            session_views = views.get(p.session_id)
            if not session_views:
                continue
            first = bisect.bisect_left(times[p.session_id], p.created_at)
            last = bisect.bisect_right(times[p.session_id], p.created_at + SESSION_HORIZON)
            if first < last:
                after[p.id] = session_views[first:last]
        if not after:
            return 0
        top: dict[int, set[str]] = defaultdict(set)
        ids = sorted(after)
        for start in range(0, len(ids), _IN_CHUNK):
            for prediction_id, sku in conn.execute(
                select(PredictionLogItem.prediction_id, PredictionLogItem.product_variant_sku).where(
                    PredictionLogItem.prediction_id.in_(ids[start : start + _IN_CHUNK]), PredictionLogItem.position < K
                )
            ):
                top[prediction_id].add(sku)
        hits: list[int] = []
        misses: list[int] = []
        future: list[int] = []
        for p in pending:
            later = after.get(p.id)
            if later is None:
                continue
            skus = top.get(p.id, set())
            if p.hit is None:
                group_end = later[0].created_at + CLICK_GROUP
                click = [v for v in later if v.created_at <= group_end]
                (hits if any(v.sku in skus and _attributed_to(v, p) for v in click) else misses).append(p.id)
            if any(v.sku in skus for v in later):
                future.append(p.id)
        for ids_, values in ((hits, {"hit": True}), (misses, {"hit": False}), (future, {"future_hit": True})):
            for low in range(0, len(ids_), 5000):
                conn.execute(update(PredictionLog).where(PredictionLog.id.in_(ids_[low : low + 5000])).values(**values))
        return len(hits) + len(misses) + len(future)

    def settle(self, session: Session, now: datetime) -> int:
        """Predictions older than the horizon that were not found to be future hits: settled as misses."""
        result = session.connection().execute(
            update(PredictionLog)
            .where(PredictionLog.future_hit.is_(None), PredictionLog.created_at < now - SESSION_HORIZON)
            .values(future_hit=False, hit=func.coalesce(PredictionLog.hit, False))
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    # --- window figures ----------------------------------------------------------------------------------------
    def live_variants(self, session: Session) -> list[tuple[str, int | None]]:
        """Every live variant's SKU and its monitoring id (None when it never appeared in a prediction)."""
        query = (
            select(ProductVariant.sku, MonitoringSku.id)
            .outerjoin(MonitoringSku, MonitoringSku.sku == ProductVariant.sku)
            .where(_live_variant())
            .order_by(ProductVariant.sku)
        )
        return [(sku, None if mid is None else int(mid)) for sku, mid in session.connection().execute(query)]

    def window(
        self,
        session: Session,
        date_from: datetime,
        date_to: datetime,
        *,
        bucket: str | None = None,
        page: str | None = None,
        live: Sequence[tuple[str, int | None]] | None = None,
    ) -> WindowFigures:
        """Every figure of the predictions logged in ``[date_from, date_to]`` (naive UTC), optionally of one page
        type, grouped (see ``WindowFigures``) and optionally bucketed by ``"hour"`` or ``"day"``. ``live``: the
        result of ``live_variants`` when the caller holds it (it is read otherwise)."""
        conn = session.connection()
        coverage = _Coverage(self.live_variants(session) if live is None else live)
        groups: dict[str, dict[tuple[Any, ...], GroupFigures]] = {name: {} for name in GROUPINGS}

        def figures(grouping: str, group: tuple[Any, ...]) -> GroupFigures:
            found = groups[grouping].get(group)
            if found is None:
                found = groups[grouping][group] = GroupFigures()
            return found

        def add_sums(key: Key, sums: Sequence[Any]) -> None:
            count = int(sums[0])
            for grouping, group in _group_keys(key).items():
                target = figures(grouping, group)
                target.predictions += count
                target.retrieval.add(count, float(sums[1] or 0.0), None if sums[2] is None else float(sums[2]))
                target.scoring.add(count, float(sums[3] or 0.0), None if sums[4] is None else float(sums[4]))
                target.ordering.add(count, float(sums[5] or 0.0), None if sums[6] is None else float(sums[6]))

        def mark(key: Key, live: np.ndarray) -> None:
            for grouping, group in _group_keys(key).items():
                if grouping != "retrieval":  # coverage is shown overall, per model and per page type
                    coverage.mark(grouping, group, live)

        starts: dict[Any, datetime | None] = {}

        def start_of(value: Any) -> datetime | None:
            """The bucket of an hour value from the database (memoised: rows share few hours)."""
            found = starts.get(value, False)
            if found is False:
                found = starts[value] = bucket_start(_as_datetime(value), bucket)
            return found  # type: ignore[return-value]

        ranges, span = rollup_plan(date_from, date_to, bucket)
        watermark = self.watermark(session, ROLLED_PREDICTION)

        # 1. whole days and hours already rolled up (read again if the aggregation committed meanwhile: the rows
        #    read must match the watermark that splits rolled-up from raw predictions)
        if ranges:
            query = select(*_ROLLUP_COLUMNS[1:]).where(
                or_(
                    *(
                        and_(
                            MonitoringRollup.period == period,
                            MonitoringRollup.bucket >= low,
                            MonitoringRollup.bucket < high,
                        )
                        for period, low, high in ranges
                    )
                )
            )
            if page is not None:
                query = query.where(MonitoringRollup.recommendation_type == page)
            rolled: list[Any] = []
            for _attempt in range(5):
                rolled = conn.execute(query).all()
                again = self.watermark(session, ROLLED_PREDICTION)
                if again == watermark:
                    break
                watermark = again
            for row in rolled:
                key = Key(start_of(row[0]), row[1], row[2], row[3])
                add_sums(key, row[4:11])
                mark(key, coverage.live_from_ids(decode_ids(row[11])))

        # 2. the raw log: the partial hours at both ends, and whatever was logged after the rollup watermark
        created = PredictionLog.created_at
        if span is not None:
            first_hour, last_hour = span
            raw = or_(
                and_(created >= date_from, created < first_hour),
                and_(created >= last_hour, created <= date_to),
                and_(created >= first_hour, created < last_hour, PredictionLog.id > watermark),
            )
        else:
            raw = and_(created >= date_from, created <= date_to)
        if page is not None:
            raw = and_(raw, PredictionLog.recommendation_type == page)
        hour = _hour_expr(session, created).label("hour") if bucket else None
        retrieval = func.coalesce(PredictionLog.retrieval_model_name, "").label("retrieval")
        dims: list[Any] = [PredictionLog.recommendation_type, PredictionLog.scoring_model_name, retrieval]
        if hour is not None:
            dims = [hour, *dims]

        def key_of(values: Sequence[Any]) -> Key:
            if hour is None:
                return Key(None, values[0], values[1], values[2])
            return Key(start_of(values[0]), values[1], values[2], values[3])

        width = len(dims)
        for row in conn.execute(select(*dims, *_SUM_COLUMNS).where(raw).group_by(*dims)):
            add_sums(key_of(row), row[width:])
        raw_skus: dict[Key, list[int]] = defaultdict(list)
        for row in conn.execute(
            select(*dims, PredictionLogItem.product_variant_sku)
            .join(PredictionLogItem, PredictionLogItem.prediction_id == PredictionLog.id)
            .where(raw, PredictionLogItem.position < K)
            .distinct()
        ):
            index = coverage.sku_to_live.get(row[width])
            if index is not None:
                raw_skus[key_of(row)].append(index)
        for key, indices in raw_skus.items():
            mark(key, np.asarray(indices, dtype=np.int64))

        # 3. hits, from the few hit rows (partial indexes)
        hit_dims: list[Any] = [PredictionLog.recommendation_type, PredictionLog.scoring_model_name]
        if hour is not None:
            hit_dims = [hour, *hit_dims]
        for column, attribute in ((PredictionLog.hit, "hits"), (PredictionLog.future_hit, "future_hits")):
            condition = and_(column == true(), created >= date_from, created <= date_to)
            if page is not None:
                condition = and_(condition, PredictionLog.recommendation_type == page)
            for row in conn.execute(select(*hit_dims, func.count()).where(condition).group_by(*hit_dims)):
                values = tuple(row)
                moment = None if hour is None else start_of(values[0])
                rest = values[-3:]
                key = Key(moment, rest[0], rest[1], "")
                for grouping, group in _group_keys(key).items():
                    if grouping == "retrieval":
                        continue
                    target = figures(grouping, group)
                    setattr(target, attribute, getattr(target, attribute) + int(rest[2]))

        for grouping, by_group in groups.items():
            for group, target in by_group.items():
                target.covered = coverage.covered(grouping, group)
        return WindowFigures(coverage.size, groups)

    # --- training and data -------------------------------------------------------------------------------------
    def training_aggregates(self, session: Session, date_from: datetime, date_to: datetime) -> list[TrainingAggregate]:
        """Runs started in ``[date_from, date_to]`` by model and status, with duration and memory statistics."""
        run = TrainingRun
        rows = session.execute(
            select(
                run.model_name,
                run.status,
                func.count(),
                func.sum(run.duration),
                func.count(run.duration),
                func.max(run.duration),
                func.sum(run.peak_memory_mb),
                func.count(run.peak_memory_mb),
                func.max(run.peak_memory_mb),
                func.sum(run.peak_memory_percentage),
                func.count(run.peak_memory_percentage),
                func.max(run.peak_memory_percentage),
            )
            .where(run.started_at >= date_from, run.started_at <= date_to)
            .group_by(run.model_name, run.status)
        ).all()
        return [
            TrainingAggregate(
                model_name=row[0],
                status=row[1],
                runs=int(row[2]),
                duration_sum=float(row[3] or 0.0),
                duration_count=int(row[4]),
                duration_max=None if row[5] is None else float(row[5]),
                memory_sum=float(row[6] or 0.0),
                memory_count=int(row[7]),
                memory_max=None if row[8] is None else float(row[8]),
                memory_pct_sum=float(row[9] or 0.0),
                memory_pct_count=int(row[10]),
                memory_pct_max=None if row[11] is None else float(row[11]),
            )
            for row in rows
        ]

    def live_variants_version(self, session: Session) -> tuple[int, int]:
        """Changes whenever ``live_variants`` may: the catalogue revision and the newest monitoring id."""
        catalog = revisions.read_all(session)[revisions.CATALOG]
        newest = session.connection().execute(select(func.max(MonitoringSku.id))).scalar()
        return catalog, int(newest or 0)

    def live_variant_count(self, session: Session) -> int:
        return int(session.connection().execute(select(func.count()).where(_live_variant())).scalar() or 0)

    def data_counts(self, session: Session, live_variants: int, cap: int) -> DataCounts:
        """Event counts for the readiness checks, each counted up to ``cap`` only (a check needs no more)."""
        conn = session.connection()

        def count(table: Any) -> int:
            capped = select(literal(1)).select_from(table).limit(cap).subquery()
            return int(conn.execute(select(func.count()).select_from(capped)).scalar() or 0)

        return DataCounts(
            live_variants=live_variants,
            views=count(ProductDetailEnter),
            carts=count(ProductAddToCart),
            order_lines=count(OrderLine),
            reviews=count(Review),
        )


def _live_variant() -> ColumnElement[bool]:
    """A variant that may be recommended: not deleted, and of a published, not deleted product or of no known
    product (the catalogue snapshot's eligibility)."""
    linked = (
        select(ProductProductVariant.product_variant_sku)
        .join(Product, Product.id == ProductProductVariant.product_id)
        .where(ProductProductVariant.product_variant_sku == ProductVariant.sku)
    )
    good = linked.where(Product.published.is_(True), Product.deleted.is_(False))
    return and_(ProductVariant.deleted.is_(False), or_(exists(good), ~exists(linked)))
