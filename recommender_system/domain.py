"""Shared value types: pages, phases, the request context, the in-memory catalogue view and model versions.

Everything here is plain data. Prediction models, the pipeline, the managers and the stores all speak it;
it imports nothing of ours.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from functools import cached_property
from typing import Any

import numpy as np


class Page(StrEnum):
    """The page a recommendation is asked for (ecoseller's ``recommendation_type``)."""

    HOMEPAGE = "HOMEPAGE"
    PRODUCT_DETAIL = "PRODUCT_DETAIL"
    CATEGORY_LIST = "CATEGORY_LIST"
    CART = "CART"


class Phase(StrEnum):
    """A step of the prediction pipeline that a model can serve."""

    RETRIEVAL = "retrieval"
    SCORING = "scoring"


@dataclass(frozen=True)
class SessionHistory:
    """What one shopper did before this request, oldest first.

    ``visited`` are product-detail views of this session *and* of the user's earlier sessions when the session is
    linked to a user; ``session_visited`` only those of the current session (GRU4Rec's input).
    """

    visited: tuple[str, ...] = ()
    session_visited: tuple[str, ...] = ()
    carted: tuple[str, ...] = ()
    ordered: tuple[str, ...] = ()
    rated: tuple[tuple[str, float], ...] = ()

    @property
    def is_empty(self) -> bool:
        return not (self.visited or self.carted or self.ordered or self.rated)


EMPTY_HISTORY = SessionHistory()


@dataclass(frozen=True)
class RecommendationContext:
    """Everything known about the request being answered."""

    page: Page
    session_id: str | None = None
    user_id: str | None = None
    limit: int | None = None
    category_id: int | None = None
    variants: tuple[str, ...] = ()
    """SKUs of the product being viewed (PRODUCT_DETAIL)."""
    cart: tuple[str, ...] = ()
    """SKUs in the cart (CART)."""
    history: SessionHistory = EMPTY_HISTORY
    seed: int | None = None
    """Seed of this request's random draws (set by the pipeline; fixed in tests); None means fresh entropy."""

    @property
    def anchors(self) -> tuple[str, ...]:
        """The SKUs the page is about: the viewed product's variants, or the cart."""
        if self.page is Page.PRODUCT_DETAIL:
            return self.variants
        if self.page is Page.CART:
            return self.cart
        return ()


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


@dataclass
class CatalogSnapshot:
    """An immutable, in-memory view of the catalogue that the hot path reads (one per process, swapped whole).

    Arrays are aligned with ``skus``: index ``i`` describes variant ``skus[i]``. ``eligible`` is true for a variant
    that may be recommended at all (not deleted, product published and not deleted); ``in_stock`` is
    ``stock_quantity > 0``.
    """

    revision: int
    skus: np.ndarray  # object array of str
    product_ids: np.ndarray  # int64, -1 when the variant belongs to no product
    stock: np.ndarray  # int64
    eligible: np.ndarray  # bool
    weights: np.ndarray  # float64, recommendation_weight
    created_at: np.ndarray  # float64, epoch seconds
    units_ordered: np.ndarray  # float64
    recent_units_ordered: (
        np.ndarray
    )  # float64, recency-weighted units (half-life of the config at build time)
    category_variants: Mapping[int, np.ndarray] = field(default_factory=dict)
    """category id -> indices of the variants of products in that category or any descendant."""
    category_products: Mapping[int, np.ndarray] = field(default_factory=dict)
    """category id -> product ids in that category or any descendant."""
    sku_index: Mapping[str, int] = field(default_factory=dict)
    _memo: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.sku_index:
            self.sku_index = {str(sku): i for i, sku in enumerate(self.skus)}

    @cached_property
    def in_stock(self) -> np.ndarray:
        return _read_only(self.stock > 0)

    @cached_property
    def recommendable(self) -> np.ndarray:
        """Eligible and in stock: what may appear on every page but category lists (computed once per snapshot,
        which is never mutated; do not modify the returned array)."""
        return _read_only(self.eligible & self.in_stock)

    def memo(self, key: str, compute: Callable[[CatalogSnapshot], Any]) -> Any:
        """A value derived from this snapshot (e.g. a model's ranking of it), computed once and kept with it.
        Arrays come back read-only: they are shared by every request on this snapshot."""
        try:
            return self._memo[key]
        except KeyError:
            value = compute(self)
            if isinstance(value, np.ndarray):
                value = _read_only(value)
            return self._memo.setdefault(key, value)

    def indices(self, skus: Sequence[str]) -> np.ndarray:
        """Indices of known SKUs, -1 for unknown ones."""
        get = self.sku_index.get
        return np.fromiter((get(s, -1) for s in skus), dtype=np.int64, count=len(skus))

    def __len__(self) -> int:
        return len(self.skus)

    @classmethod
    def empty(cls) -> CatalogSnapshot:
        return cls(
            revision=0,
            skus=np.array([], dtype=object),
            product_ids=np.array([], dtype=np.int64),
            stock=np.array([], dtype=np.int64),
            eligible=np.array([], dtype=bool),
            weights=np.array([], dtype=np.float64),
            created_at=np.array([], dtype=np.float64),
            units_ordered=np.array([], dtype=np.float64),
            recent_units_ordered=np.array([], dtype=np.float64),
        )


@dataclass(frozen=True)
class ModelVersion:
    """A published artefact of a trained model."""

    model_name: str
    version: str
    path: str
    created_at: datetime

    @property
    def identifier(self) -> str:
        return f"{self.model_name}_{self.version}"


@dataclass(frozen=True)
class RankedItem:
    sku: str
    position: int


@dataclass(frozen=True)
class Recommendation:
    """The pipeline's answer: SKUs best first and the models that produced them."""

    page: Page
    skus: tuple[str, ...]
    model_name: str
    model_identifier: str
    retrieval_model: str = ""
    retrieval_identifier: str = ""
    durations: Mapping[str, float] = field(default_factory=dict)
