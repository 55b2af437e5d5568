"""Latest: the newest variants first (by the variant's ``created_at``), ties in catalogue order."""

from __future__ import annotations

import numpy as np

from recommender_system.domain import CatalogSnapshot, RecommendationContext
from recommender_system.prediction.models.base import PredictionModel
from recommender_system.prediction.models.dummy import recommendable_indices


class LatestModel(PredictionModel):
    name = "latest"

    def retrieve(self, ctx: RecommendationContext, catalog: CatalogSnapshot, size: int) -> np.ndarray:
        if size <= 0:
            return np.array([], dtype=np.int64)

        def rank(snapshot: CatalogSnapshot) -> np.ndarray:
            pool = recommendable_indices(snapshot)
            return pool[np.lexsort((pool, -np.asarray(snapshot.created_at, dtype=np.float64)[pool]))]

        return catalog.memo("latest", rank)[:size]

    def score(self, ctx: RecommendationContext, catalog: CatalogSnapshot, candidates: np.ndarray) -> np.ndarray:
        """Creation time in epoch seconds: newer scores higher."""
        return np.asarray(catalog.created_at, dtype=np.float64)[np.asarray(candidates, dtype=np.int64)]
