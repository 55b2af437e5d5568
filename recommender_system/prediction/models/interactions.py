"""The weighted user x item matrix shared by EASE, ALS and co-occurrence, and their held-out ranking metrics.

A shopper's events (``TrainingData.events``) become one sparse row per user key: a view counts ``view``, an
add-to-cart ``cart``, an ordered line ``order`` times its quantity, a review its rating times ``review_per_star``
(``EventWeights``); repeated events add up. At serving time the same weights turn a request's history and anchors
into a sparse item vector (``context_items``).

Hyper-parameters reach the models through ``TrainingData.hyperparameters``; ``event_weights`` (an
``EventWeights`` or a dict of its fields) sets the weights, and each model reads its own config with
``config_from`` (key ``ease_config``/``als_config``/``cooccurrence_config``, or the config's fields at the top
level). ``holdout: false`` skips the validation fit that only reports metrics.

The ranking metrics live here, next to the matrix, because a model's ``fit`` reports them on a time-split holdout
of its own data and models may not import the trainer; ``trainer.evaluation`` re-exports them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import BaseModel

from recommender_system.domain import CatalogSnapshot, RecommendationContext
from recommender_system.prediction.config import EventWeights

logger = logging.getLogger(__name__)

ConfigT = TypeVar("ConfigT", bound=BaseModel)

HOLDOUT_QUANTILE = 0.8
METRIC_K = 20


# --- hyper-parameters -----------------------------------------------------------------------------------------
def config_from(hyperparameters: Mapping[str, Any], key: str, cls: type[ConfigT]) -> ConfigT:
    """A model's config: ``hyperparameters[key]`` (instance or dict), else the config's own fields at the top level."""
    value = hyperparameters.get(key)
    if isinstance(value, cls):
        return value
    if isinstance(value, Mapping):
        return cls.model_validate(dict(value))
    own = {name: v for name, v in hyperparameters.items() if name in cls.model_fields}
    return cls.model_validate(own)


def event_weights_from(hyperparameters: Mapping[str, Any]) -> EventWeights:
    """``hyperparameters["event_weights"]`` as an ``EventWeights`` (defaults when absent)."""
    value = hyperparameters.get("event_weights")
    if isinstance(value, EventWeights):
        return value
    if isinstance(value, Mapping):
        return EventWeights.model_validate(dict(value))
    return EventWeights()


def holdout_enabled(hyperparameters: Mapping[str, Any]) -> bool:
    return bool(hyperparameters.get("holdout", True))


# --- the matrix -----------------------------------------------------------------------------------------------
def event_values(events: pd.DataFrame, weights: EventWeights) -> np.ndarray:
    """The matrix value of every event row (0 for an unknown kind of event)."""
    kinds = events["event"].astype(str).to_numpy()
    raw = events["weight"].to_numpy(dtype=np.float64) if "weight" in events else np.ones(len(events))
    raw = np.nan_to_num(raw, nan=1.0)
    values = np.zeros(len(events), dtype=np.float64)
    values[kinds == "view"] = weights.view
    values[kinds == "cart"] = weights.cart
    is_order = kinds == "order"
    values[is_order] = weights.order * raw[is_order]
    is_review = kinds == "review"
    values[is_review] = weights.review_per_star * raw[is_review]
    return values


@dataclass(frozen=True)
class InteractionMatrix:
    """Users x items, float32 CSR; ``items``/``users`` name the columns/rows (SKUs sorted, user keys sorted)."""

    matrix: sp.csr_matrix
    items: np.ndarray
    users: np.ndarray

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def n_users(self) -> int:
        return len(self.users)

    def item_index(self) -> dict[str, int]:
        return {str(sku): i for i, sku in enumerate(self.items)}

    def user_index(self) -> dict[str, int]:
        return {str(key): i for i, key in enumerate(self.users)}


def build_interactions(events: pd.DataFrame, weights: EventWeights, max_items: int | None = None) -> InteractionMatrix:
    """The weighted user x item matrix of ``events``; with ``max_items``, only the items most users touched."""
    empty = InteractionMatrix(
        sp.csr_matrix((0, 0), dtype=np.float32), np.array([], dtype=object), np.array([], dtype=object)
    )
    if events.empty:
        return empty
    values = event_values(events, weights)
    keep = values > 0
    if not keep.any():
        return empty
    user_codes, users = pd.factorize(events["user_key"].astype(str).to_numpy()[keep], sort=True)
    item_codes, items = pd.factorize(events["sku"].astype(str).to_numpy()[keep], sort=True)
    matrix = sp.csr_matrix(
        (values[keep].astype(np.float32), (user_codes, item_codes)),
        shape=(len(users), len(items)),
        dtype=np.float32,
    )
    matrix.sum_duplicates()
    items = np.asarray(items, dtype=object)
    users = np.asarray(users, dtype=object)
    if max_items is not None and len(items) > max_items:
        frequency = np.diff(matrix.tocsc().indptr)
        # most users first, ties by SKU order; then back to SKU order
        kept = np.sort(np.argsort(-frequency, kind="stable")[:max_items])
        logger.info(
            "item cap: keeping the %d most frequent of %d items (%.1f%% of interactions)",
            max_items,
            len(items),
            100.0 * frequency[kept].sum() / max(1, frequency.sum()),
        )
        matrix = matrix[:, kept].tocsr()
        items = items[kept]
        active = np.diff(matrix.indptr) > 0
        matrix = matrix[active].tocsr()
        users = users[active]
    return InteractionMatrix(matrix, items, users)


def timestamps_seconds(values: pd.Series) -> np.ndarray:
    """Epoch seconds (float64) of a datetime column, naive values read as UTC."""
    stamps = pd.to_datetime(values, utc=True)
    return ((stamps - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)).to_numpy(dtype=np.float64)


@dataclass(frozen=True)
class TimeSplit:
    """Events before the cut, and the (user_key, sku) pairs first seen at or after it (known users and items)."""

    train: pd.DataFrame
    test_pairs: pd.DataFrame
    cut: float


def time_split(events: pd.DataFrame, quantile: float = HOLDOUT_QUANTILE) -> TimeSplit | None:
    """Protocol A's split: the cut is the ``quantile`` of the pairs' first-event times; None if a side is empty.

    A pair that already occurred before the cut is never a test pair (a repeat is not a discovery).
    """
    if events.empty:
        return None
    seconds = timestamps_seconds(events["timestamp"])
    keys = pd.DataFrame(
        {"user_key": events["user_key"].astype(str).to_numpy(), "sku": events["sku"].astype(str).to_numpy()}
    )
    keys["t"] = seconds
    first = keys.groupby(["user_key", "sku"], sort=False)["t"].min().reset_index()
    cut = float(np.quantile(first["t"].to_numpy(), quantile))
    before = seconds < cut
    train = events[before]
    test = first[first["t"].to_numpy() >= cut]
    test = test[test["user_key"].isin(set(keys["user_key"][before])) & test["sku"].isin(set(keys["sku"][before]))]
    if train.empty or test.empty:
        return None
    return TimeSplit(train=train, test_pairs=test[["user_key", "sku"]].reset_index(drop=True), cut=cut)


def pairs_matrix(fitted: InteractionMatrix, pairs: pd.DataFrame) -> sp.csr_matrix:
    """Binary users x items matrix of ``pairs`` aligned with ``fitted``; unknown users or items are dropped."""
    users = pd.Index(fitted.users.astype(str)).get_indexer(pairs["user_key"].astype(str))
    items = pd.Index(fitted.items.astype(str)).get_indexer(pairs["sku"].astype(str))
    ok = (users >= 0) & (items >= 0)
    matrix = sp.csr_matrix(
        (np.ones(int(ok.sum()), dtype=np.float32), (users[ok], items[ok])), shape=fitted.matrix.shape
    )
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix


def holdout_split(
    events: pd.DataFrame, weights: EventWeights, max_items: int | None = None
) -> tuple[InteractionMatrix, sp.csr_matrix] | None:
    """The time-split holdout every user-item model validates on: the train part's matrix and the test pairs as
    a matrix over it; None when there is nothing to hold out."""
    split = time_split(events)
    if split is None:
        return None
    part = build_interactions(split.train, weights, max_items=max_items)
    test = pairs_matrix(part, split.test_pairs)
    if part.n_items == 0 or test.nnz == 0:
        return None
    return part, test


# --- serving --------------------------------------------------------------------------------------------------
def context_items(
    ctx: RecommendationContext,
    item_index: Mapping[str, int],
    weights: EventWeights,
    anchor_weight: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The request as a sparse item vector: (sorted item indices, float32 values), unknown SKUs left out.

    History events weigh as in training (an order line counts one unit). The page's anchors (the viewed
    product's variants, or the cart) weigh ``anchor_weight``, by default the strongest event weight.
    """
    if anchor_weight is None:
        anchor_weight = max(weights.view, weights.cart, weights.order)
    # One request asks several models (readiness, retrieval, scoring) for the same vector.
    return request_memo(
        ctx, ("context", id(item_index), id(weights), anchor_weight), _context_items, item_index, weights, anchor_weight
    )


def request_memo(ctx: RecommendationContext, key: Hashable, compute: Callable[..., _T], *args: Any) -> _T:
    """``compute(ctx, *args)``, computed once per request: answers are kept for the context this thread is serving
    (by identity of the context object, not its value) under ``key``, and dropped when it serves another."""
    memo = getattr(_request_memo, "value", None)
    if memo is None or memo[0] is not ctx:
        memo = (ctx, {})
        _request_memo.value = memo
    try:
        return memo[1][key]  # type: ignore[no-any-return]
    except KeyError:
        found = memo[1][key] = compute(ctx, *args)
        return found


_request_memo = threading.local()
_T = TypeVar("_T")


def _context_items(
    ctx: RecommendationContext, item_index: Mapping[str, int], weights: EventWeights, anchor_weight: float
) -> tuple[np.ndarray, np.ndarray]:
    history = ctx.history
    collected: dict[int, float] = {}
    get = item_index.get

    def add(skus: Sequence[str], value: float) -> None:
        if value <= 0:
            return
        for sku in skus:
            index = get(str(sku))
            if index is not None:
                collected[index] = collected.get(index, 0.0) + value

    add(history.visited, weights.view)
    add(history.carted, weights.cart)
    add(history.ordered, weights.order)
    for sku, rating in history.rated:
        add((sku,), weights.review_per_star * float(rating))
    add(ctx.anchors, anchor_weight)
    if not collected:
        return np.array([], dtype=np.int64), np.array([], dtype=np.float32)
    indices = np.fromiter(collected, dtype=np.int64, count=len(collected))
    order = np.argsort(indices)
    values = np.fromiter(collected.values(), dtype=np.float32, count=len(collected))
    return indices[order], values[order]


def weighted_row_sum(matrix: sp.csr_matrix, rows: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``weights @ matrix[rows]`` as a dense float64 vector, straight from the CSR arrays (scipy's row indexing and
    transpose cost more than the arithmetic for the few rows of one request)."""
    starts = matrix.indptr[rows]
    lengths = matrix.indptr[np.asarray(rows) + 1] - starts
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(matrix.shape[1], dtype=np.float64)
    # positions of every stored entry of the chosen rows: each row's start, then consecutive offsets
    offsets = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    positions = np.repeat(starts, lengths) + offsets
    contributions = np.repeat(np.asarray(weights, dtype=np.float64), lengths) * matrix.data[positions]
    return np.bincount(matrix.indices[positions], weights=contributions, minlength=matrix.shape[1])


class CatalogAlignment:
    """Maps a model's items to catalogue indices and back, cached per ``catalog.revision`` (thread-safe)."""

    def __init__(self, items: np.ndarray) -> None:
        self._items = [str(sku) for sku in items]
        self._lock = threading.Lock()
        # (revision, catalogue length, to_catalog, to_model, recommendable model items)
        self._cached: tuple[int, int, np.ndarray, np.ndarray, np.ndarray] | None = None

    def arrays(self, catalog: CatalogSnapshot) -> tuple[np.ndarray, np.ndarray]:
        """(catalogue index of each model item or -1, model item of each catalogue index or -1)."""
        cached = self._aligned(catalog)
        return cached[2], cached[3]

    def recommendable_items(self, catalog: CatalogSnapshot) -> np.ndarray:
        """The model items whose variant the catalogue may recommend, in model order."""
        return self._aligned(catalog)[4]

    def _aligned(self, catalog: CatalogSnapshot) -> tuple[int, int, np.ndarray, np.ndarray, np.ndarray]:
        cached = self._cached
        if cached is not None and cached[0] == catalog.revision and cached[1] == len(catalog):
            return cached
        to_catalog = catalog.indices(self._items)
        to_model = np.full(len(catalog), -1, dtype=np.int64)
        known = to_catalog >= 0
        to_model[to_catalog[known]] = np.flatnonzero(known)
        usable = known.copy()
        if len(catalog):
            usable[usable] = catalog.recommendable[to_catalog[usable]]
        cached = (catalog.revision, len(catalog), to_catalog, to_model, np.flatnonzero(usable))
        with self._lock:
            self._cached = cached
        return cached


def scores_for_candidates(
    item_scores: np.ndarray, alignment: CatalogAlignment, catalog: CatalogSnapshot, candidates: np.ndarray
) -> np.ndarray:
    """One float64 per candidate catalogue index: the model's item score, NaN for items it does not know."""
    _, to_model = alignment.arrays(catalog)
    candidates = np.asarray(candidates, dtype=np.int64)
    out = np.full(len(candidates), np.nan, dtype=np.float64)
    valid = (candidates >= 0) & (candidates < len(to_model))
    model_items = np.full(len(candidates), -1, dtype=np.int64)
    model_items[valid] = to_model[candidates[valid]]
    known = model_items >= 0
    out[known] = item_scores[model_items[known]]
    return out


def retrieve_top(
    item_scores: np.ndarray, alignment: CatalogAlignment, catalog: CatalogSnapshot, size: int
) -> np.ndarray:
    """Catalogue indices of the ``size`` best-scored recommendable items, best first (ties by catalogue order)."""
    to_catalog, _ = alignment.arrays(catalog)
    if size <= 0 or len(to_catalog) == 0:
        return np.array([], dtype=np.int64)
    items = alignment.recommendable_items(catalog)
    keys = item_scores[items]
    finite = np.isfinite(keys)
    if not finite.all():
        items, keys = items[finite], keys[finite]
    if len(items) == 0:
        return np.array([], dtype=np.int64)
    if size < len(items) // 2:  # a partial selection: only what reaches the size-th best score, ties included
        threshold = -np.partition(-keys, size - 1)[size - 1]
        chosen = np.flatnonzero(keys >= threshold)
        items, keys = items[chosen], keys[chosen]
    catalogue = to_catalog[items]
    order = np.lexsort((catalogue, -keys))[:size]
    return catalogue[order]


# --- ranking metrics ------------------------------------------------------------------------------------------
def top_k(scores: np.ndarray, k: int, exclude: sp.csr_matrix | None = None) -> np.ndarray:
    """Row-wise column indices of the ``k`` highest scores, best first, ties to the lower index.

    NaN scores and the nonzeros of ``exclude`` (e.g. training items) rank last; positions that only such items
    could fill are -1.
    """
    scores = np.array(scores, dtype=np.float64, copy=True)
    n_rows, n_cols = scores.shape
    scores[np.isnan(scores)] = -np.inf
    if exclude is not None and exclude.nnz:
        rows, cols = exclude.nonzero()
        scores[rows, cols] = -np.inf
    k = min(k, n_cols)
    if k <= 0 or n_rows == 0:
        return np.full((n_rows, max(k, 0)), -1, dtype=np.int64)
    kth = np.partition(scores, n_cols - k, axis=1)[:, n_cols - k][:, None]
    above = scores > kth
    tied = scores == kth
    need = k - above.sum(axis=1, keepdims=True)
    chosen = above | (tied & (np.cumsum(tied, axis=1) <= need))
    columns = np.nonzero(chosen)[1].reshape(n_rows, k)
    values = np.take_along_axis(scores, columns, axis=1)
    order = np.argsort(-values, axis=1, kind="stable")
    top = np.take_along_axis(columns, order, axis=1)
    top[np.take_along_axis(values, order, axis=1) == -np.inf] = -1
    return top


@dataclass(frozen=True)
class RankingResult:
    """Per-user metrics at ``k`` (aligned with ``users``) and the items that appeared in any top-k list."""

    k: int
    users: np.ndarray
    recall: np.ndarray
    ndcg: np.ndarray
    reciprocal_rank: np.ndarray
    hit: np.ndarray
    recommended_items: np.ndarray
    n_items: int

    @property
    def coverage(self) -> float:
        return len(self.recommended_items) / self.n_items if self.n_items else 0.0

    def summary(self) -> dict[str, float]:
        """``recall@k``, ``ndcg@k``, ``mrr@k``, ``hr@k``, ``coverage@k`` (means over users) and ``users``."""
        k = self.k

        def mean(values: np.ndarray) -> float:
            return float(values.mean()) if len(values) else 0.0

        return {
            f"recall@{k}": mean(self.recall),
            f"ndcg@{k}": mean(self.ndcg),
            f"mrr@{k}": mean(self.reciprocal_rank),
            f"hr@{k}": mean(self.hit),
            f"coverage@{k}": self.coverage,
            "users": float(len(self.users)),
        }


def rank_metrics(top: np.ndarray, relevant: sp.csr_matrix, k: int) -> dict[str, np.ndarray]:
    """Per-row recall, NDCG (binary gains, ideal DCG over min(k, |relevant|)), reciprocal rank and hit at k.

    ``top`` holds column indices best first (-1 for an empty position); ``relevant`` has one row per ``top`` row.
    Rows without relevant items get zeros.
    """
    top = top[:, :k]
    n_rows, width = top.shape
    dense = relevant.toarray() > 0
    valid = top >= 0
    hits = np.take_along_axis(dense, np.where(valid, top, 0), axis=1) & valid
    n_relevant = dense.sum(axis=1)
    ideal_len = np.minimum(n_relevant, k)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.concatenate([[1.0], np.cumsum(discounts)])  # index 0 avoids 0/0
    denominator = np.maximum(ideal_len, 1)
    recall = hits.sum(axis=1) / denominator
    ndcg = (hits * discounts[:width]).sum(axis=1) / np.where(ideal_len > 0, ideal[ideal_len], 1.0)
    any_hit = hits.any(axis=1)
    reciprocal = np.where(any_hit, 1.0 / (hits.argmax(axis=1) + 1), 0.0)
    return {"recall": recall, "ndcg": ndcg, "reciprocal_rank": reciprocal, "hit": any_hit.astype(np.float64)}


def evaluate_rankings(
    score_rows: Callable[[np.ndarray], np.ndarray],
    train: sp.csr_matrix,
    test: sp.csr_matrix,
    k: int = METRIC_K,
    batch_size: int = 512,
) -> RankingResult:
    """Rank every item for each user with test items, training items removed, and measure against ``test``.

    ``score_rows(rows)`` returns a dense (len(rows), n_items) score array for those user rows.
    """
    n_items = train.shape[1]
    users = np.flatnonzero(np.diff(test.indptr) > 0)
    parts: dict[str, list[np.ndarray]] = {"recall": [], "ndcg": [], "reciprocal_rank": [], "hit": []}
    recommended = np.zeros(n_items, dtype=bool)
    for start in range(0, len(users), batch_size):
        rows = users[start : start + batch_size]
        scores = np.asarray(score_rows(rows))
        top = top_k(scores, k, exclude=train[rows])
        recommended[top[top >= 0]] = True
        for name, values in rank_metrics(top, test[rows], k).items():
            parts[name].append(values)

    def joined(name: str) -> np.ndarray:
        return np.concatenate(parts[name]) if parts[name] else np.array([], dtype=np.float64)

    return RankingResult(
        k=k,
        users=users,
        recall=joined("recall"),
        ndcg=joined("ndcg"),
        reciprocal_rank=joined("reciprocal_rank"),
        hit=joined("hit"),
        recommended_items=np.flatnonzero(recommended),
        n_items=n_items,
    )


def holdout_metrics(
    score_rows: Callable[[np.ndarray], np.ndarray],
    train: sp.csr_matrix,
    test: sp.csr_matrix,
    k: int = METRIC_K,
    batch_size: int = 512,
) -> dict[str, float]:
    """``evaluate_rankings(...).summary()``: the metrics a fit reports in ``FitReport.metrics``."""
    return evaluate_rankings(score_rows, train, test, k=k, batch_size=batch_size).summary()


class ItemScoreServing:
    """``retrieve`` and ``score`` of the user-item models, from one vector of scores over the model's items.

    A model provides ``_item_scores(ctx)`` (None when it knows nothing of the shopper) and ``_alignment``; it may
    restrict what retrieval returns with ``_retrievable``."""

    _alignment: CatalogAlignment

    def _item_scores(self, ctx: RecommendationContext) -> np.ndarray | None:
        raise TypeError(f"{type(self).__name__} must define _item_scores")

    def _retrievable(self, scores: np.ndarray) -> np.ndarray:
        return scores

    def _scores_once(self, ctx: RecommendationContext) -> np.ndarray | None:
        """``_item_scores``, once per request when the model both retrieves and scores it."""
        return request_memo(ctx, ("item-scores", id(self)), self._item_scores)

    def retrieve(self, ctx: RecommendationContext, catalog: CatalogSnapshot, size: int) -> np.ndarray:
        scores = self._scores_once(ctx)
        if scores is None:
            return np.array([], dtype=np.int64)
        return retrieve_top(self._retrievable(scores), self._alignment, catalog, size)

    def score(self, ctx: RecommendationContext, catalog: CatalogSnapshot, candidates: np.ndarray) -> np.ndarray:
        scores = self._scores_once(ctx)
        if scores is None:
            return np.full(len(candidates), np.nan, dtype=np.float64)
        return scores_for_candidates(scores, self._alignment, catalog, candidates)
