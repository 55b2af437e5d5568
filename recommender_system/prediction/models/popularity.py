"""Popularity: variants by units ordered, recent orders optionally weighing more.

The counts come with the ``CatalogSnapshot`` (``units_ordered``, and ``recent_units_ordered`` decayed with the
configured half-life), so the model holds no state but its config. Ties are broken by catalogue order.
"""

from __future__ import annotations

import numpy as np

from recommender_system.domain import CatalogSnapshot, RecommendationContext
from recommender_system.prediction.config import PopularityConfig
from recommender_system.prediction.models.base import PredictionModel
from recommender_system.prediction.models.dummy import recommendable_indices


class PopularityModel(PredictionModel):
    name = "popularity"

    def __init__(self, version: str | None = None, config: PopularityConfig | None = None) -> None:
        super().__init__(version)
        self.config = config or PopularityConfig()

    def _units(self, catalog: CatalogSnapshot) -> np.ndarray:
        units = catalog.units_ordered if self.config.half_life_days is None else catalog.recent_units_ordered
        return np.asarray(units, dtype=np.float64)

    def is_ready(self, ctx: RecommendationContext, catalog: CatalogSnapshot) -> bool:
        """Ready as soon as any unit of any catalogue variant was ordered."""
        return bool(catalog.memo("popularity:ready", lambda c: bool(len(c)) and bool(np.any(c.units_ordered > 0))))

    def _ranking(self, catalog: CatalogSnapshot) -> np.ndarray:
        """Every recommendable variant, most units first, ties in catalogue order (once per snapshot)."""

        def rank(snapshot: CatalogSnapshot) -> np.ndarray:
            pool = recommendable_indices(snapshot)
            return pool[np.lexsort((pool, -self._units(snapshot)[pool]))]

        recent = self.config.half_life_days is not None
        return catalog.memo("popularity:recent" if recent else "popularity:units", rank)

    def retrieve(self, ctx: RecommendationContext, catalog: CatalogSnapshot, size: int) -> np.ndarray:
        """Recommendable variants, most units first, ties in catalogue order."""
        if size <= 0:
            return np.array([], dtype=np.int64)
        return self._ranking(catalog)[:size]

    def score(self, ctx: RecommendationContext, catalog: CatalogSnapshot, candidates: np.ndarray) -> np.ndarray:
        return self._units(catalog)[np.asarray(candidates, dtype=np.int64)].astype(np.float64)
