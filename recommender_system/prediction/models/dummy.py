"""Dummy: in-stock variants in the fixed catalogue order. The last resort of every cascade; always ready."""

from __future__ import annotations

import numpy as np

from recommender_system.domain import CatalogSnapshot, RecommendationContext
from recommender_system.prediction.models.base import PredictionModel


def recommendable_indices(catalog: CatalogSnapshot) -> np.ndarray:
    """Indices of the recommendable variants in catalogue order (computed once per snapshot)."""
    return catalog.memo("recommendable_indices", lambda c: np.flatnonzero(c.recommendable).astype(np.int64))


class DummyModel(PredictionModel):
    name = "dummy"

    def retrieve(self, ctx: RecommendationContext, catalog: CatalogSnapshot, size: int) -> np.ndarray:
        """The first ``size`` recommendable variants in catalogue order."""
        if size <= 0:
            return np.array([], dtype=np.int64)
        return recommendable_indices(catalog)[:size]

    def score(self, ctx: RecommendationContext, catalog: CatalogSnapshot, candidates: np.ndarray) -> np.ndarray:
        """The fixed catalogue order: the lower the catalogue index, the higher the score."""
        return -np.asarray(candidates, dtype=np.float64)
