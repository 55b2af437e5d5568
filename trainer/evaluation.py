"""Offline ranking metrics: Recall@k, NDCG@k, MRR@k, HR@k, Coverage@k on full rankings, and a paired bootstrap.

The vectorised metric code lives in ``recommender_system.prediction.models.interactions`` (models report holdout
metrics from their own ``fit`` and may not import the trainer); this module is the trainer's and the benchmarks'
entry point to it.

Definitions (per user with at least one test item, then averaged over those users), on the ranking of every item
with the user's training items removed:
- Recall@k = hits in the top k / min(k, |test items|)
- NDCG@k with binary gains; the ideal DCG puts min(k, |test items|) hits first
- MRR@k = 1 / rank of the first hit in the top k (0 without a hit); HR@k = 1 when the top k holds any hit
- Coverage@k = share of all items that appear in at least one user's top k
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recommender_system.prediction.models.interactions import (
    HOLDOUT_QUANTILE,
    METRIC_K,
    RankingResult,
    evaluate_rankings,
    holdout_metrics,
    pairs_matrix,
    rank_metrics,
    time_split,
    top_k,
)

__all__ = [
    "HOLDOUT_QUANTILE",
    "METRIC_K",
    "BootstrapResult",
    "RankingResult",
    "evaluate_rankings",
    "holdout_metrics",
    "paired_bootstrap",
    "pairs_matrix",
    "rank_metrics",
    "time_split",
    "top_k",
]


@dataclass(frozen=True)
class BootstrapResult:
    """Mean of ``a - b`` over users, its 95% percentile interval, and the share of resamples where b >= a."""

    difference: float
    low: float
    high: float
    p_value: float
    resamples: int

    @property
    def significant(self) -> bool:
        """True when the 95% interval excludes zero."""
        return self.low > 0 or self.high < 0


def paired_bootstrap(a: np.ndarray, b: np.ndarray, resamples: int = 1000, seed: int = 0) -> BootstrapResult:
    """Paired bootstrap over users of two per-user metric arrays (same users, same order)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError("paired_bootstrap needs two non-empty 1-d arrays of the same length")
    differences = a - b
    rng = np.random.default_rng(seed)
    means = np.empty(resamples, dtype=np.float64)
    chunk = max(1, 2_000_000 // len(differences))
    for start in range(0, resamples, chunk):
        stop = min(start + chunk, resamples)
        draws = rng.integers(0, len(differences), size=(stop - start, len(differences)))
        means[start:stop] = differences[draws].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return BootstrapResult(
        difference=float(differences.mean()),
        low=float(low),
        high=float(high),
        p_value=float((means <= 0).mean()),
        resamples=resamples,
    )
