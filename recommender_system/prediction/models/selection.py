"""Selection: a random sample of in-stock variants, each drawn with probability proportional to its weight.

The draw is Efraimidis and Spirakis' weighted sampling without replacement: every variant gets the key
``log(u) / w`` for a uniform ``u`` (the logarithm of ``u ** (1 / w)``, the same order but no underflow), and the
variants taken by descending key are a weighted sample without replacement. A zero (or negative) weight gets
the key ``-inf`` and so is drawn only after every positive-weight variant (among themselves: catalogue order).

Keys are drawn for the whole catalogue from the request's seed, so retrieval and scoring of one request agree.
"""

from __future__ import annotations

import numpy as np

from recommender_system.domain import CatalogSnapshot, RecommendationContext
from recommender_system.prediction.models.base import PredictionModel
from recommender_system.prediction.models.dummy import recommendable_indices


def weighted_keys(weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Efraimidis-Spirakis keys ``log(u) / w``: sorting them descending draws a weighted sample w/o replacement."""
    uniforms = rng.random(len(weights))
    keys = np.full(len(weights), -np.inf)
    positive = weights > 0
    # u in [0, 1): u == 0 gives log 0 = -inf, which would tie with zero weights; nudge it to the smallest float
    keys[positive] = np.log(np.maximum(uniforms[positive], np.finfo(np.float64).tiny)) / weights[positive]
    return keys


class SelectionModel(PredictionModel):
    name = "selection"

    def _keys(self, ctx: RecommendationContext, catalog: CatalogSnapshot) -> np.ndarray:
        return weighted_keys(np.asarray(catalog.weights, dtype=np.float64), np.random.default_rng(ctx.seed))

    def retrieve(self, ctx: RecommendationContext, catalog: CatalogSnapshot, size: int) -> np.ndarray:
        """A weighted sample of up to ``size`` recommendable variants, in draw order."""
        pool = recommendable_indices(catalog)
        if size <= 0 or len(pool) == 0:
            return np.array([], dtype=np.int64)
        keys = self._keys(ctx, catalog)[pool]
        if size < len(pool):
            top = np.argpartition(-keys, size - 1)[:size]
            # descending key; equal keys (only -inf in practice) in catalogue order
            chosen = top[np.lexsort((pool[top], -keys[top]))]
        else:
            chosen = np.lexsort((pool, -keys))
        return pool[chosen].astype(np.int64, copy=False)

    def score(self, ctx: RecommendationContext, catalog: CatalogSnapshot, candidates: np.ndarray) -> np.ndarray:
        """The same keys as retrieval: ranking candidates by score is a weighted random order of them."""
        return self._keys(ctx, catalog)[np.asarray(candidates, dtype=np.int64)]
