"""EASE (Steck 2019, arXiv 1905.03375): a closed-form item-item linear autoencoder.

B = argmin ||X - XB||^2 + lambda ||B||^2 subject to diag(B) = 0 has the closed form P = (X^T X + lambda I)^-1,
B = -P / diag(P) (column-wise), diag(B) = 0. P is computed in float32, in place, by a blocked Cholesky-based
inverse (LAPACK ``potrf``/``potri`` on blocks, GEMMs between them): several times faster than
``numpy.linalg.inv`` and within float32 rounding of it. lambda is the ``EaseConfig.l2_options`` value with the
best NDCG@20 on a time-split holdout of the training data (cut at the 0.8 quantile of the shopper-item pairs'
first times); the model is then refit on all events. Only the ``max_items`` most frequent items enter.

A shopper's scores are their weighted item vector (history plus the page's anchors) times B. The artefact is B as a
float32 ``.npy`` file, memory-mapped read-only on load so that the web workers share its pages.
"""

from __future__ import annotations

import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
from scipy.linalg import lapack
from threadpoolctl import threadpool_limits

from recommender_system.domain import CatalogSnapshot, RecommendationContext
from recommender_system.prediction.config import EaseConfig, EventWeights
from recommender_system.prediction.models.base import (
    FitReport,
    ModelNotFittedError,
    PredictionModel,
    TrainingData,
    load_mapped,
)
from recommender_system.prediction.models.interactions import (
    METRIC_K,
    CatalogAlignment,
    ItemScoreServing,
    build_interactions,
    config_from,
    context_items,
    event_weights_from,
    holdout_enabled,
    holdout_metrics,
    holdout_split,
)

logger = logging.getLogger(__name__)

_BLOCK = 2048
_LEAF = 2048


def gram_matrix(matrix: sp.csr_matrix) -> np.ndarray:
    """X^T X as a dense C-ordered float32 array, built in column blocks (no sparse n x n intermediate).

    The blocks are independent sparse products (SciPy releases the GIL in them), computed on every core.
    """
    n = matrix.shape[1]
    by_item = matrix.T.tocsr().astype(np.float32)
    by_column = matrix.tocsc().astype(np.float32)
    gram = np.empty((n, n), dtype=np.float32)

    def fill(start: int) -> None:
        stop = min(start + _BLOCK, n)
        gram[:, start:stop] = (by_item @ by_column[:, start:stop]).toarray()

    starts = range(0, n, _BLOCK)
    if len(starts) <= 1:
        for start in starts:
            fill(start)
    else:
        with ThreadPoolExecutor(max_workers=min(len(starts), os.cpu_count() or 1)) as pool:
            list(pool.map(fill, starts))
    return gram


def ease_weights(gram: np.ndarray, l2: float) -> np.ndarray:
    """B of EASE from the Gram matrix; ``gram`` is overwritten and returned as B (float32, zero diagonal)."""
    n = gram.shape[0]
    if gram.dtype != np.float32 or not gram.flags.c_contiguous:
        raise ValueError("gram must be a C-contiguous float32 array")
    if n == 0:
        return gram
    gram[np.diag_indices(n)] += np.float32(l2)
    spd_inverse_inplace(gram)
    diagonal = gram.diagonal().copy()
    np.divide(gram, -diagonal[None, :], out=gram)
    gram[np.diag_indices(n)] = 0.0
    return gram


def spd_inverse_inplace(a: np.ndarray) -> None:
    """Invert a symmetric positive definite float32 matrix in place: a blocked Cholesky-based inverse.

    Blocks of at most ``_LEAF`` rows are inverted by LAPACK's Cholesky routines (``spotrf`` + ``spotri``) on one
    BLAS thread. Larger matrices are split in halves and combined through the Schur complement
    S = A22 - A21 A11^-1 A12 (the block form of the Cholesky factorisation), whose products are large GEMMs:
    A^-1 = [[A11^-1 + W S^-1 W^T, -W S^-1], [-S^-1 W^T, S^-1]] with W = A11^-1 A12. The two symmetric updates
    compute only their lower blocks, so the whole costs about n^3 flops, as ``potrf`` + ``potri`` do.
    OpenBLAS's own multi-threaded ``potrf``/``potri`` synchronise often and slow down many times over when
    another process holds a core (measured 30 s against 11 s for n = 10,000 on a busy 2-core machine); the GEMMs
    use every core and degrade gracefully.
    """
    n = a.shape[0]
    if n <= _LEAF:
        block = np.array(a, dtype=np.float32, order="C", copy=True)
        with threadpool_limits(1, user_api="blas"):
            _lapack_inverse(block)
        a[...] = block
        return
    h = n // 2
    a11, a12, a21, a22 = a[:h, :h], a[:h, h:], a[h:, :h], a[h:, h:]
    spd_inverse_inplace(a11)
    w = a11 @ a12
    _subtract_symmetric_product(a22, a21, w)  # S = A22 - A21 A11^-1 A12
    spd_inverse_inplace(a22)
    np.matmul(w, a22, out=a12)
    a12 *= -1.0
    _subtract_symmetric_product(a11, a12, w.T)  # A11^-1 + W S^-1 W^T
    a21[...] = a12.T


def _subtract_symmetric_product(c: np.ndarray, left: np.ndarray, right: np.ndarray) -> None:
    """``c -= left @ right`` for a product known to be symmetric: the lower blocks are computed, then mirrored.

    Halving recursively skips the upper off-diagonal blocks, about half the multiply-adds of one GEMM.
    """
    n = c.shape[0]
    if n <= _LEAF:
        c -= left @ right
        _symmetrise_from_lower(c)
        return
    h = n // 2
    _subtract_symmetric_product(c[:h, :h], left[:h], right[:, :h])
    _subtract_symmetric_product(c[h:, h:], left[h:], right[:, h:])
    c[h:, :h] -= left[h:] @ right[:, :h]
    c[:h, h:] = c[h:, :h].T


def _lapack_inverse(a: np.ndarray) -> None:
    """LAPACK Cholesky inverse of a C-contiguous SPD float32 array, in place, both triangles filled."""
    # ``a`` is symmetric, so its transpose is the same matrix in Fortran order: LAPACK works on it in place.
    # The Fortran-order upper triangle we ask for is the C-order lower triangle of ``a``.
    factor, info = lapack.spotrf(a.T, lower=0, clean=0, overwrite_a=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"Cholesky factorisation failed (info={info}); is lambda > 0?")
    inverse, info = lapack.spotri(factor, lower=0, overwrite_c=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"Cholesky inverse failed (info={info})")
    if not np.shares_memory(inverse, a):
        a[...] = inverse.T
    _symmetrise_from_lower(a)


def _symmetrise_from_lower(p: np.ndarray) -> None:
    """Copy the lower triangle (row >= column) of ``p`` onto its upper triangle, block by block, in place."""
    n = p.shape[0]
    for start in range(0, n, _BLOCK):
        stop = min(start + _BLOCK, n)
        block = p[start:stop, start:stop]
        block[...] = np.tril(block) + np.tril(block, -1).T
        if stop < n:
            p[start:stop, stop:] = p[stop:, start:stop].T


class EaseModel(ItemScoreServing, PredictionModel):
    """EASE over the weighted shopper x variant matrix; retrieves for the homepage and scores every page."""

    name: ClassVar[str] = "ease"
    artefact_files: ClassVar[tuple[str, ...]] = ("B.npy", "ease.json")

    def __init__(self, version: str | None = None) -> None:
        super().__init__(version)
        self._weights_matrix: np.ndarray | None = None
        self._items: np.ndarray = np.array([], dtype=object)
        self._item_index: dict[str, int] = {}
        self._event_weights = EventWeights()
        self._l2: float | None = None
        self._alignment = CatalogAlignment(self._items)

    # --- state ------------------------------------------------------------------------------------------
    @property
    def items(self) -> np.ndarray:
        return self._items

    @property
    def l2(self) -> float | None:
        """The lambda of the fitted model."""
        return self._l2

    @property
    def weights_matrix(self) -> np.ndarray:
        """B (items x items, float32)."""
        if self._weights_matrix is None:
            raise ModelNotFittedError("ease is not fitted")
        return self._weights_matrix

    def _set_state(self, weights: np.ndarray, items: np.ndarray, event_weights: EventWeights, l2: float) -> None:
        self._items = np.asarray(items, dtype=object)
        self._item_index = {str(sku): i for i, sku in enumerate(self._items)}
        self._event_weights = event_weights
        self._l2 = l2
        self._alignment = CatalogAlignment(self._items)
        self._weights_matrix = weights

    # --- training ---------------------------------------------------------------------------------------
    def fit(self, data: TrainingData) -> FitReport:
        """Choose lambda on a time-split holdout (when there are several options), then fit on all events."""
        started = time.perf_counter()
        hyperparameters = data.hyperparameters
        config = config_from(hyperparameters, "ease_config", EaseConfig)
        event_weights = event_weights_from(hyperparameters)
        full = build_interactions(data.events, event_weights, max_items=config.max_items)
        if full.n_items == 0:
            raise ValueError("ease: no weighted events to fit on")
        options = sorted({float(v) for v in config.l2_options})
        validation: dict[float, dict[str, float]] = {}
        if len(options) > 1 or holdout_enabled(hyperparameters):
            validation = self._validate(data, event_weights, config.max_items, options)
        if validation:
            chosen = max(options, key=lambda lam: (validation[lam][f"ndcg@{METRIC_K}"], -options.index(lam)))
        else:
            chosen = options[len(options) // 2]
            if len(options) > 1:
                logger.warning("ease: too little data for a holdout; using the middle lambda %s", chosen)
        fit_started = time.perf_counter()
        weights = ease_weights(gram_matrix(full.matrix), chosen)
        self._set_state(weights, full.items, event_weights, chosen)
        logger.info(
            "ease: fitted %d items x %d users, lambda=%s in %.2fs (total %.2fs)",
            full.n_items,
            full.n_users,
            chosen,
            time.perf_counter() - fit_started,
            time.perf_counter() - started,
        )
        return FitReport(
            hyperparameters={
                "l2": chosen,
                "l2_options": options,
                "validation_ndcg": {str(lam): m[f"ndcg@{METRIC_K}"] for lam, m in validation.items()},
            },
            metrics=dict(validation.get(chosen, {})),
            n_items=full.n_items,
            n_users=full.n_users,
            n_events=len(data.events),
        )

    @staticmethod
    def _validate(
        data: TrainingData, event_weights: EventWeights, max_items: int, options: list[float]
    ) -> dict[float, dict[str, float]]:
        """Holdout metrics of every lambda option (empty when the data cannot be split)."""
        holdout = holdout_split(data.events, event_weights, max_items=max_items)
        if holdout is None:
            return {}
        part, test = holdout
        gram = gram_matrix(part.matrix)
        results: dict[float, dict[str, float]] = {}
        for position, l2 in enumerate(options):
            last = position == len(options) - 1
            weights = ease_weights(gram if last else gram.copy(), l2)
            results[l2] = holdout_metrics(lambda rows, b=weights: part.matrix[rows] @ b, part.matrix, test)
            logger.info("ease: lambda=%s validation ndcg@%d=%.4f", l2, METRIC_K, results[l2][f"ndcg@{METRIC_K}"])
        return results

    # --- serving ----------------------------------------------------------------------------------------
    def _item_scores(self, ctx: RecommendationContext) -> np.ndarray | None:
        if self._weights_matrix is None:
            raise ModelNotFittedError("ease is not fitted")
        indices, values = context_items(ctx, self._item_index, self._event_weights)
        if len(indices) == 0:
            return None
        rows = np.asarray(self._weights_matrix[indices], dtype=np.float32)
        return values @ rows

    def is_ready(self, ctx: RecommendationContext, catalog: CatalogSnapshot) -> bool:
        if self._weights_matrix is None:
            return False
        indices, _ = context_items(ctx, self._item_index, self._event_weights)
        return len(indices) > 0

    # --- artefact ---------------------------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        weights = self.weights_matrix
        directory = Path(directory)
        np.save(directory / "B.npy", np.asarray(weights, dtype=np.float32), allow_pickle=False)
        state: dict[str, Any] = {
            "items": [str(sku) for sku in self._items],
            "l2": self._l2,
            "event_weights": self._event_weights.model_dump(),
        }
        (directory / "ease.json").write_text(json.dumps(state), encoding="utf-8")

    @classmethod
    def load(cls, directory: Path, version: str) -> EaseModel:
        directory = Path(directory)
        state = json.loads((directory / "ease.json").read_text(encoding="utf-8"))
        weights = load_mapped(directory / "B.npy")
        items = np.array(state["items"], dtype=object)
        if weights.shape != (len(items), len(items)):
            raise ValueError(f"ease artefact: B has shape {weights.shape} for {len(items)} items")
        model = cls(version)
        model._set_state(weights, items, EventWeights.model_validate(state["event_weights"]), float(state["l2"]))
        return model
