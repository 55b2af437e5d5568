"""Item-based co-occurrence (the item-kNN of Gorse and of Sarwar et al.): variants together in shoppers' histories.

Two variants are similar when the same user or session key viewed, carted or bought both: cosine similarity of
their weighted columns in the shopper x variant matrix, shrunk towards zero for rarely seen pairs,
``sim(i, j) = x_i . x_j / (|x_i| |x_j| + shrink)``. Each variant keeps its ``neighbours`` most similar variants
(a sparse matrix, computed in row blocks, never a dense n x n one). A shopper's score for variant j is the
weighted sum, over the items of their history and the page's anchors, of the similarity of j to that item among
j's kept neighbours.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from recommender_system.domain import CatalogSnapshot, RecommendationContext
from recommender_system.prediction.config import CooccurrenceConfig, EventWeights
from recommender_system.prediction.models.base import FitReport, ModelNotFittedError, PredictionModel, TrainingData
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
    weighted_row_sum,
)

logger = logging.getLogger(__name__)

_BLOCK_ENTRIES = 1 << 22
"""Dense entries of one block of similarity rows (16 MB of float32)."""


def item_similarity(matrix: sp.csr_matrix, neighbours: int, shrink: float) -> sp.csr_matrix:
    """Shrunk cosine similarity, keeping for each item (row) its ``neighbours`` most similar other items.

    Returns a float32 CSR item x item matrix ``S`` with at most ``neighbours`` positive entries per row; row j
    holds the items j is most similar to.
    """
    n_items = matrix.shape[1]
    if n_items == 0:
        return sp.csr_matrix((0, 0), dtype=np.float32)
    by_item = matrix.T.tocsr().astype(np.float32)
    norms = np.sqrt(np.asarray(by_item.multiply(by_item).sum(axis=1), dtype=np.float64).ravel()).astype(np.float32)
    keep = min(neighbours, n_items - 1)
    block = max(1, _BLOCK_ENTRIES // n_items)
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    values: list[np.ndarray] = []
    for start in range(0, n_items, block):
        stop = min(start + block, n_items)
        counts = (by_item[start:stop] @ matrix).toarray().astype(np.float32)
        denominator = norms[start:stop, None] * norms[None, :] + np.float32(shrink)
        similarity = np.divide(counts, denominator, out=np.zeros_like(counts), where=denominator > 0)
        similarity[np.arange(stop - start), np.arange(start, stop)] = 0.0
        if keep <= 0:
            continue
        top = np.argpartition(-similarity, keep - 1, axis=1)[:, :keep]
        top_values = np.take_along_axis(similarity, top, axis=1)
        positive = top_values > 0
        rows.append(np.repeat(np.arange(start, stop), keep)[positive.ravel()])
        cols.append(top[positive])
        values.append(top_values[positive])
    if not rows:
        return sp.csr_matrix((n_items, n_items), dtype=np.float32)
    return sp.csr_matrix(
        (np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))),
        shape=(n_items, n_items),
        dtype=np.float32,
    )


class CooccurrenceModel(ItemScoreServing, PredictionModel):
    """Item-kNN over co-occurrence in shoppers' histories; retrieves for the homepage, product pages and carts."""

    name: ClassVar[str] = "cooccurrence"
    artefact_files: ClassVar[tuple[str, ...]] = ("similarity.npz", "cooccurrence.json")

    def __init__(self, version: str | None = None) -> None:
        super().__init__(version)
        self._contributions: sp.csr_matrix | None = None
        self._items: np.ndarray = np.array([], dtype=object)
        self._item_index: dict[str, int] = {}
        self._event_weights = EventWeights()
        self._config = CooccurrenceConfig()
        self._alignment = CatalogAlignment(self._items)

    @property
    def items(self) -> np.ndarray:
        return self._items

    @property
    def similarity(self) -> sp.csr_matrix:
        """S: row j holds the kept neighbours of item j and their similarities."""
        return self._require().T.tocsr()

    def _require(self) -> sp.csr_matrix:
        if self._contributions is None:
            raise ModelNotFittedError("cooccurrence is not fitted")
        return self._contributions

    def _set_state(
        self, similarity: sp.csr_matrix, items: np.ndarray, weights: EventWeights, config: CooccurrenceConfig
    ) -> None:
        self._items = np.asarray(items, dtype=object)
        self._item_index = {str(sku): i for i, sku in enumerate(self._items)}
        self._event_weights = weights
        self._config = config
        self._alignment = CatalogAlignment(self._items)
        # row h of S^T: how much a history item h adds to each item that keeps h as a neighbour
        self._contributions = similarity.T.tocsr()

    # --- training ---------------------------------------------------------------------------------------
    def fit(self, data: TrainingData) -> FitReport:
        started = time.perf_counter()
        config = config_from(data.hyperparameters, "cooccurrence_config", CooccurrenceConfig)
        weights = event_weights_from(data.hyperparameters)
        full = build_interactions(data.events, weights)
        if full.n_items == 0:
            raise ValueError("cooccurrence: no weighted events to fit on")
        metrics: dict[str, float] = {}
        if holdout_enabled(data.hyperparameters):
            metrics = self._validate(data, weights, config)
        similarity = item_similarity(full.matrix, config.neighbours, config.shrink)
        self._set_state(similarity, full.items, weights, config)
        logger.info(
            "cooccurrence: %d items, %d neighbour pairs in %.2fs",
            full.n_items,
            similarity.nnz,
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
    def _validate(data: TrainingData, weights: EventWeights, config: CooccurrenceConfig) -> dict[str, float]:
        holdout = holdout_split(data.events, weights)
        if holdout is None:
            return {}
        part, test = holdout
        contributions = item_similarity(part.matrix, config.neighbours, config.shrink).T.tocsr()
        return holdout_metrics(lambda rows: (part.matrix[rows] @ contributions).toarray(), part.matrix, test)

    # --- serving ----------------------------------------------------------------------------------------
    def _item_scores(self, ctx: RecommendationContext) -> np.ndarray | None:
        contributions = self._require()
        indices, values = context_items(ctx, self._item_index, self._event_weights)
        if len(indices) == 0:
            return None
        return weighted_row_sum(contributions, indices, values)

    def is_ready(self, ctx: RecommendationContext, catalog: CatalogSnapshot) -> bool:
        if self._contributions is None:
            return False
        indices, _ = context_items(ctx, self._item_index, self._event_weights)
        return len(indices) > 0

    def _retrievable(self, scores: np.ndarray) -> np.ndarray:
        """Only items related to the shopper's (positive co-occurrence) are retrieved."""
        return np.where(scores > 0, scores, -np.inf)

    # --- artefact ---------------------------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        directory = Path(directory)
        sp.save_npz(directory / "similarity.npz", self.similarity, compressed=False)
        state: dict[str, Any] = {
            "items": [str(sku) for sku in self._items],
            "config": self._config.model_dump(),
            "event_weights": self._event_weights.model_dump(),
        }
        (directory / "cooccurrence.json").write_text(json.dumps(state), encoding="utf-8")

    @classmethod
    def load(cls, directory: Path, version: str) -> CooccurrenceModel:
        directory = Path(directory)
        state = json.loads((directory / "cooccurrence.json").read_text(encoding="utf-8"))
        similarity = sp.load_npz(directory / "similarity.npz").tocsr().astype(np.float32)
        items = np.array(state["items"], dtype=object)
        if similarity.shape != (len(items), len(items)):
            raise ValueError(f"cooccurrence artefact: shape {similarity.shape} for {len(items)} items")
        model = cls(version)
        model._set_state(
            similarity,
            items,
            EventWeights.model_validate(state["event_weights"]),
            CooccurrenceConfig.model_validate(state["config"]),
        )
        return model
