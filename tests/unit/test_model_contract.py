"""The one contract every prediction model passes, parametrised over every registered model name.

Learned models are first fitted on a small known ``TrainingData`` (8 items, 16 sessions; the catalogue also holds
``NEW``, which no training frame mentions). Then, for every model: scores align with the candidates (one float per
candidate, the same under any permutation of them), unknown items score NaN (learned models) or are known (models
that read only the catalogue), unknown context SKUs never raise, answers are deterministic under a seed, trainable
models survive a save/load round trip, and ``retrieve`` returns valid unique catalogue indices for every page the
registry declares.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from recommender_system.domain import CatalogSnapshot, Page, Phase, RecommendationContext, SessionHistory
from recommender_system.prediction.models import _CLASSES, MODEL_NAMES, model_class
from recommender_system.prediction.models.base import (
    PredictionModel,
    TrainingData,
    UnsupportedOperationError,
)
from recommender_system.prediction.models.registry import SPECS
from tests.factories import CatalogBuilder

ITEMS = [f"i{k}" for k in range(8)]
T0 = datetime(2024, 3, 1, 8, 0, 0)

HYPERPARAMETERS: dict[str, Any] = {
    "holdout": False,
    "ease_config": {"l2_options": [10.0]},
    "als_config": {"factors": 4, "iterations": 3, "regularization": 0.1},
    "cooccurrence_config": {"neighbours": 5},
    "similarity_config": {"neighbours": 5},
    # GRU4Rec reads its own keys at the top level
    "num_epochs": 2,
    "batch_size": 4,
    "hidden_size": 8,
    "n_sample": 4,
    "dropout_p_embed": 0.0,
    "dropout_p_hidden": 0.0,
    "num_threads": 1,
}


def training_data(seed: int = 0) -> TrainingData:
    """16 sessions over 8 items: each views four consecutive items, carts one, orders one, reviews one."""
    rows = []
    for k in range(16):
        user_key = f"u{k % 6}" if k % 2 == 0 else f"s:sess{k}"
        steps = [("view", k + step, 1.0) for step in range(4)]
        steps += [("cart", k + 1, 1.0), ("order", k + 2, 1.0 + k % 3), ("review", k + 3, float(1 + k % 5))]
        for kind, item, weight in steps:
            rows.append((user_key, f"sess{k}", ITEMS[item % 8], kind, weight, T0 + timedelta(minutes=len(rows))))
    events = pd.DataFrame(rows, columns=["user_key", "session_id", "sku", "event", "weight", "timestamp"])
    variants = pd.DataFrame(
        {
            "sku": ITEMS,
            "product_id": [k // 2 for k in range(8)],
            "price": [10.0 + 5 * k for k in range(8)],
            "stock": [5] * 8,
            "eligible": [True] * 8,
        }
    )
    attributes = pd.DataFrame(
        [(sku, 1, "CATEGORICAL", ["drama", "comedy"][k % 2], None) for k, sku in enumerate(ITEMS)]
        + [(sku, 2, "NUMERICAL", str(1990 + k), float(1990 + k)) for k, sku in enumerate(ITEMS)],
        columns=["sku", "attribute_type_id", "type", "raw_value", "numeric_value"],
    )
    return TrainingData(
        events=events, variants=variants, attributes=attributes, hyperparameters=dict(HYPERPARAMETERS), seed=seed
    )


def catalog() -> CatalogSnapshot:
    """The 8 trained items plus ``NEW`` (in no training frame); all in stock, every item ordered once."""
    builder = CatalogBuilder(categories={1: [*ITEMS, "NEW"]})
    for k, sku in enumerate(ITEMS):
        builder.add(sku, product_id=k // 2, created_at=float(k), units=float(1 + k % 3))
    builder.add("NEW", product_id=99, created_at=100.0, units=1.0)
    return builder.build()


HISTORY = SessionHistory(
    visited=("i0", "i1", "i2"),
    session_visited=("i0", "i1", "i2"),
    carted=("i1",),
    ordered=("i2",),
    rated=(("i3", 4.0),),
)


def context(page: Page, seed: int = 3) -> RecommendationContext:
    """A request about known items: a known user and session with history; anchors on known items."""
    return RecommendationContext(
        page=page,
        session_id="sess0",
        user_id="u0",
        limit=5,
        category_id=1 if page is Page.CATEGORY_LIST else None,
        variants=("i4", "i5") if page is Page.PRODUCT_DETAIL else (),
        cart=("i6",) if page is Page.CART else (),
        history=HISTORY,
        seed=seed,
    )


def unknown_context(page: Page) -> RecommendationContext:
    """A request about SKUs nobody knows."""
    history = SessionHistory(visited=("zzz",), session_visited=("zzz",), carted=("zzz",))
    return RecommendationContext(
        page=page, session_id="nobody", user_id="nobody", variants=("zzz",), cart=("zzz",), history=history, seed=1
    )


def resolve(name: str) -> type[PredictionModel]:
    """The model class: every registered name must have one (a missing module fails the suite)."""
    return model_class(name)


_FITTED: dict[str, PredictionModel] = {}


def fitted(name: str) -> PredictionModel:
    """A ready instance: fitted once per test session for trainable models, fresh otherwise."""
    cls = resolve(name)
    if not SPECS[name].trainable:
        return cls()
    if name not in _FITTED:
        model = cls()
        model.fit(training_data())
        _FITTED[name] = model
    return _FITTED[name]


def scored_pages(name: str) -> list[Page]:
    return sorted(SPECS[name].scoring, key=list(Page).index)


def retrieved_pages(name: str) -> list[Page]:
    return sorted(SPECS[name].retrieval, key=list(Page).index)


# --- the contract ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_class_matches_its_registry_entry(name: str) -> None:
    cls = resolve(name)
    assert cls.name == name
    for page in Page:
        assert cls.can(Phase.RETRIEVAL, page) == (page in SPECS[name].retrieval)
        assert cls.can(Phase.SCORING, page) == (page in SPECS[name].scoring)
    if not SPECS[name].trainable:
        with pytest.raises(UnsupportedOperationError):
            cls().fit(training_data())
        assert cls().identifier == name


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_ready_for_a_context_of_known_items(name: str) -> None:
    model = fitted(name)
    snapshot = catalog()
    for page in scored_pages(name):
        assert model.is_ready(context(page), snapshot), f"{name} is not ready for {page}"


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_scores_align_with_candidates(name: str) -> None:
    model = fitted(name)
    snapshot = catalog()
    candidates = np.arange(len(snapshot), dtype=np.int64)
    permutation = np.random.default_rng(0).permutation(len(candidates))
    for page in scored_pages(name):
        ctx = context(page)
        scores = np.asarray(model.score(ctx, snapshot, candidates))
        assert scores.shape == (len(candidates),)
        assert scores.dtype.kind == "f"
        assert not np.isposinf(scores).any()
        again = np.asarray(model.score(ctx, snapshot, candidates[permutation]))
        np.testing.assert_allclose(again, scores[permutation], rtol=1e-5, atol=1e-6, equal_nan=True)
        known = [snapshot.sku_index[sku] for sku in ITEMS]
        assert np.isfinite(scores[known]).any(), f"{name} scores no known item on {page}"
        assert model.score(ctx, snapshot, np.array([], dtype=np.int64)).shape == (0,)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_unknown_items_score_nan_for_learned_models(name: str) -> None:
    model = fitted(name)
    snapshot = catalog()
    new = np.array([snapshot.sku_index["NEW"]])
    for page in scored_pages(name):
        score = float(model.score(context(page), snapshot, new)[0])
        if SPECS[name].trainable:
            assert np.isnan(score), f"{name} scored an item it was never trained on ({page})"
        else:
            assert np.isfinite(score), f"{name} reads the catalogue, so it knows every variant ({page})"


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_unknown_context_skus_never_raise(name: str) -> None:
    model = fitted(name)
    snapshot = catalog()
    candidates = np.arange(len(snapshot), dtype=np.int64)
    for page in Page:
        ctx = unknown_context(page)
        ready = model.is_ready(ctx, snapshot)
        assert isinstance(ready, bool)
        if page in SPECS[name].scoring:
            assert np.asarray(model.score(ctx, snapshot, candidates)).shape == (len(candidates),)
        if page in SPECS[name].retrieval:
            retrieved = np.asarray(model.retrieve(ctx, snapshot, 5))
            assert len(retrieved) <= 5


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_retrieve_returns_valid_unique_catalogue_indices(name: str) -> None:
    model = fitted(name)
    snapshot = catalog()
    pages = retrieved_pages(name)
    for page in pages:
        for size in (3, 50):
            retrieved = np.asarray(model.retrieve(context(page), snapshot, size))
            assert retrieved.dtype.kind == "i"
            assert len(retrieved) <= size
            assert len(np.unique(retrieved)) == len(retrieved)
            assert ((retrieved >= 0) & (retrieved < len(snapshot))).all()
        assert len(model.retrieve(context(page), snapshot, 3)) > 0, f"{name} retrieves nothing for {page}"
    if not pages:  # a scoring-only model refuses to retrieve
        with pytest.raises(UnsupportedOperationError):
            model.retrieve(context(Page.HOMEPAGE), snapshot, 3)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_deterministic_under_a_seed(name: str) -> None:
    cls = resolve(name)
    snapshot = catalog()
    candidates = np.arange(len(snapshot), dtype=np.int64)
    if SPECS[name].trainable:
        first, second = cls(), cls()
        first.fit(training_data(seed=5))
        second.fit(training_data(seed=5))
    else:
        first, second = cls(), cls()
    for page in scored_pages(name):
        np.testing.assert_allclose(
            first.score(context(page, seed=11), snapshot, candidates),
            second.score(context(page, seed=11), snapshot, candidates),
            rtol=1e-5,
            atol=1e-6,
            equal_nan=True,
        )
    for page in retrieved_pages(name):
        assert (
            first.retrieve(context(page, seed=11), snapshot, 5).tolist()
            == second.retrieve(context(page, seed=11), snapshot, 5).tolist()
        )


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_save_load_round_trip(name: str, tmp_path: Path) -> None:
    if not SPECS[name].trainable:
        cls = resolve(name)
        with pytest.raises(UnsupportedOperationError):
            cls().save(tmp_path)
        return
    model = fitted(name)
    model.save(tmp_path)
    loaded = resolve(name).load(tmp_path, "v9")
    assert loaded.identifier == f"{name}_v9"
    snapshot = catalog()
    candidates = np.arange(len(snapshot), dtype=np.int64)
    for page in scored_pages(name):
        np.testing.assert_allclose(
            loaded.score(context(page), snapshot, candidates),
            model.score(context(page), snapshot, candidates),
            rtol=1e-5,
            atol=1e-6,
            equal_nan=True,
        )
    for page in retrieved_pages(name):
        expected = model.retrieve(context(page), snapshot, 5).tolist()
        assert loaded.retrieve(context(page), snapshot, 5).tolist() == expected


def test_models_are_pure() -> None:
    """Importing every model module pulls in neither storage, SQLAlchemy, Flask nor the container."""
    modules = [module for module, _ in _CLASSES.values() if importlib.util.find_spec(module) is not None]
    code = (
        "import sys, importlib\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('flask', 'sqlalchemy', 'dependency_injector')"
        " or m.startswith(('recommender_system.storage', 'recommender_system.container', 'recommender_system.api')))\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == ""
