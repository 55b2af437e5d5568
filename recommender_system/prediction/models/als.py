"""Implicit-feedback ALS (Hu, Koren & Volinsky 2008) with the ``implicit`` library, over weighted shopper events.

The weighted shopper x variant matrix is factorised by ``implicit.cpu.als.AlternatingLeastSquares`` (confidence
``alpha * value`` for observed pairs, 1 for the rest, as ``implicit`` defines it). A known user or session key is
served from its stored factors; any other shopper is folded in: their vector solves the same regularised weighted
least squares against the fixed item factors, from the request's history and anchors.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares
from threadpoolctl import threadpool_limits

from recommender_system.domain import CatalogSnapshot, RecommendationContext
from recommender_system.prediction.config import AlsConfig, EventWeights
from recommender_system.prediction.models.base import (
    FitReport,
    ModelNotFittedError,
    PredictionModel,
    TrainingData,
    load_mapped,
)
from recommender_system.prediction.models.interactions import (
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


def factorise(matrix: sp.csr_matrix, config: AlsConfig, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(user factors, item factors), float32, of a users x items matrix."""
    # implicit runs its own threads; a multi-threaded BLAS underneath only oversubscribes the cores (and implicit
    # warns about it when the model is built)
    with threadpool_limits(1, user_api="blas"):
        model = AlternatingLeastSquares(
            factors=config.factors,
            regularization=config.regularization,
            alpha=config.alpha,
            iterations=config.iterations,
            dtype=np.float32,
            random_state=seed,
        )
        model.fit(matrix.astype(np.float32), show_progress=False)
    return np.ascontiguousarray(model.user_factors), np.ascontiguousarray(model.item_factors)


def fold_in(
    item_factors: np.ndarray,
    gram: np.ndarray,
    indices: np.ndarray,
    values: np.ndarray,
    regularization: float,
    alpha: float,
) -> np.ndarray:
    """A user vector for items ``indices`` with matrix values ``values``, item factors fixed.

    Minimises sum_i c_i (p_i - x.y_i)^2 + regularization |x|^2 over all items, with p_i = 1 and c_i = alpha * value
    for the given items and p_i = 0, c_i = 1 for the rest:
    x = (Y^T Y + sum_i (c_i - 1) y_i y_i^T + regularization I)^-1 sum_i c_i y_i.
    """
    confidence = alpha * np.asarray(values, dtype=np.float64)
    factors = np.asarray(item_factors[indices], dtype=np.float64)
    system = gram + (factors.T * (confidence - 1.0)) @ factors
    system[np.diag_indices_from(system)] += regularization
    return np.linalg.solve(system, factors.T @ confidence).astype(np.float32)


class AlsModel(ItemScoreServing, PredictionModel):
    """ALS matrix factorisation; retrieves for the homepage and scores every page."""

    name: ClassVar[str] = "als"
    artefact_files: ClassVar[tuple[str, ...]] = ("item_factors.npy", "user_factors.npy", "als.json")

    def __init__(self, version: str | None = None) -> None:
        super().__init__(version)
        self._item_factors: np.ndarray | None = None
        self._user_factors: np.ndarray = np.zeros((0, 0), dtype=np.float32)
        self._items: np.ndarray = np.array([], dtype=object)
        self._users: np.ndarray = np.array([], dtype=object)
        self._item_index: dict[str, int] = {}
        self._user_index: dict[str, int] = {}
        self._gram = np.zeros((0, 0))
        self._config = AlsConfig()
        self._event_weights = EventWeights()
        self._alignment = CatalogAlignment(self._items)

    @property
    def items(self) -> np.ndarray:
        return self._items

    @property
    def item_factors(self) -> np.ndarray:
        if self._item_factors is None:
            raise ModelNotFittedError("als is not fitted")
        return self._item_factors

    @property
    def user_factors(self) -> np.ndarray:
        return self._user_factors

    def _set_state(
        self,
        item_factors: np.ndarray,
        user_factors: np.ndarray,
        items: np.ndarray,
        users: np.ndarray,
        config: AlsConfig,
        weights: EventWeights,
    ) -> None:
        self._items = np.asarray(items, dtype=object)
        self._users = np.asarray(users, dtype=object)
        self._item_index = {str(sku): i for i, sku in enumerate(self._items)}
        self._user_index = {str(key): i for i, key in enumerate(self._users)}
        self._gram = np.asarray(item_factors, dtype=np.float64).T @ np.asarray(item_factors, dtype=np.float64)
        self._config = config
        self._event_weights = weights
        self._alignment = CatalogAlignment(self._items)
        self._user_factors = user_factors
        self._item_factors = item_factors

    # --- training ---------------------------------------------------------------------------------------
    def fit(self, data: TrainingData) -> FitReport:
        started = time.perf_counter()
        config = config_from(data.hyperparameters, "als_config", AlsConfig)
        weights = event_weights_from(data.hyperparameters)
        full = build_interactions(data.events, weights)
        if full.n_items == 0:
            raise ValueError("als: no weighted events to fit on")
        metrics: dict[str, float] = {}
        if holdout_enabled(data.hyperparameters):
            metrics = self._validate(data, weights, config)
        user_factors, item_factors = factorise(full.matrix, config, data.seed)
        self._set_state(item_factors, user_factors, full.items, full.users, config, weights)
        logger.info(
            "als: %d users x %d items, %d factors in %.2fs",
            full.n_users,
            full.n_items,
            config.factors,
            time.perf_counter() - started,
        )
        return FitReport(
            hyperparameters=config.model_dump(),
            metrics=metrics,
            n_items=full.n_items,
            n_users=full.n_users,
            n_events=len(data.events),
        )

    @staticmethod
    def _validate(data: TrainingData, weights: EventWeights, config: AlsConfig) -> dict[str, float]:
        holdout = holdout_split(data.events, weights)
        if holdout is None:
            return {}
        part, test = holdout
        user_factors, item_factors = factorise(part.matrix, config, data.seed)
        return holdout_metrics(lambda rows: user_factors[rows] @ item_factors.T, part.matrix, test)

    # --- serving ----------------------------------------------------------------------------------------
    def _user_vector(self, ctx: RecommendationContext) -> np.ndarray | None:
        """Stored factors of the request's user (or session) key, else the folded-in history; None if neither."""
        item_factors = self.item_factors
        for key in (ctx.user_id, f"s:{ctx.session_id}" if ctx.session_id else None):
            row = self._user_index.get(str(key)) if key is not None else None
            if row is not None:
                return np.asarray(self._user_factors[row], dtype=np.float32)
        indices, values = context_items(ctx, self._item_index, self._event_weights)
        if len(indices) == 0:
            return None
        return fold_in(item_factors, self._gram, indices, values, self._config.regularization, self._config.alpha)

    def is_ready(self, ctx: RecommendationContext, catalog: CatalogSnapshot) -> bool:
        if self._item_factors is None:
            return False
        for key in (ctx.user_id, f"s:{ctx.session_id}" if ctx.session_id else None):
            if key is not None and str(key) in self._user_index:
                return True
        indices, _ = context_items(ctx, self._item_index, self._event_weights)
        return len(indices) > 0

    def _item_scores(self, ctx: RecommendationContext) -> np.ndarray | None:
        vector = self._user_vector(ctx)
        if vector is None:
            return None
        return np.asarray(self.item_factors @ vector, dtype=np.float64)

    # --- artefact ---------------------------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        directory = Path(directory)
        np.save(directory / "item_factors.npy", np.asarray(self.item_factors, dtype=np.float32), allow_pickle=False)
        np.save(directory / "user_factors.npy", np.asarray(self._user_factors, dtype=np.float32), allow_pickle=False)
        state: dict[str, Any] = {
            "items": [str(sku) for sku in self._items],
            "users": [str(key) for key in self._users],
            "config": self._config.model_dump(),
            "event_weights": self._event_weights.model_dump(),
        }
        (directory / "als.json").write_text(json.dumps(state), encoding="utf-8")

    @classmethod
    def load(cls, directory: Path, version: str) -> AlsModel:
        directory = Path(directory)
        state = json.loads((directory / "als.json").read_text(encoding="utf-8"))
        item_factors = np.load(directory / "item_factors.npy", allow_pickle=False)
        user_factors = load_mapped(directory / "user_factors.npy")
        items = np.array(state["items"], dtype=object)
        users = np.array(state["users"], dtype=object)
        if item_factors.shape[0] != len(items) or user_factors.shape[0] != len(users):
            raise ValueError("als artefact: factors do not match the item or user lists")
        model = cls(version)
        model._set_state(
            item_factors,
            user_factors,
            items,
            users,
            AlsConfig.model_validate(state["config"]),
            EventWeights.model_validate(state["event_weights"]),
        )
        return model
