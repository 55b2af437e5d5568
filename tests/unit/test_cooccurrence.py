"""Co-occurrence item-kNN: shrunk cosine on a hand case, sparse top-k neighbours, serving and the artefact."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recommender_system.domain import Page, RecommendationContext, SessionHistory
from recommender_system.prediction.models import cooccurrence as cooccurrence_module
from recommender_system.prediction.models.base import TrainingData
from recommender_system.prediction.models.cooccurrence import CooccurrenceModel, item_similarity
from tests.factories import CatalogBuilder

T0 = datetime(2024, 2, 1)
BINARY = {"view": 1.0, "cart": 1.0, "order": 1.0, "review_per_star": 1.0}
# u1: a b; u2: a b c; u3: c; s:x (an anonymous session): b c
PAIRS = [("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "b"), ("u2", "c"), ("u3", "c"), ("s:x", "b"), ("s:x", "c")]
SIM_AB = 2 / (math.sqrt(2 * 3) + 1)  # a.b = 2, |a| = sqrt 2, |b| = sqrt 3, shrink 1
SIM_AC = 1 / (math.sqrt(2 * 3) + 1)
SIM_BC = 2 / (3 + 1)


def view_events(pairs: list[tuple[str, str]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_key": [u for u, _ in pairs],
            "session_id": [u for u, _ in pairs],
            "sku": [s for _, s in pairs],
            "event": "view",
            "weight": 1.0,
            "timestamp": [T0 + timedelta(minutes=k) for k in range(len(pairs))],
        }
    )


def fitted(neighbours: int = 1, shrink: float = 1.0, pairs: list[tuple[str, str]] = PAIRS) -> CooccurrenceModel:
    model = CooccurrenceModel()
    hyperparameters = {
        "event_weights": BINARY,
        "holdout": False,
        "cooccurrence_config": {"neighbours": neighbours, "shrink": shrink},
    }
    model.fit(TrainingData(events=view_events(pairs), hyperparameters=hyperparameters))
    return model


def test_similarity_is_shrunk_cosine_keeping_the_top_neighbours() -> None:
    x = sp.csr_matrix(np.array([[1, 1, 0], [1, 1, 1], [0, 0, 1], [0, 1, 1]], dtype=np.float32))
    full = item_similarity(x, neighbours=2, shrink=1.0).toarray()
    expected = np.array([[0, SIM_AB, SIM_AC], [SIM_AB, 0, SIM_BC], [SIM_AC, SIM_BC, 0]])
    assert np.allclose(full, expected, atol=1e-6)

    top1 = item_similarity(x, neighbours=1, shrink=1.0).toarray()
    assert np.allclose(top1, [[0, SIM_AB, 0], [SIM_AB, 0, 0], [0, SIM_BC, 0]], atol=1e-6)


def test_blocks_give_the_same_neighbours_as_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(4)
    x = sp.csr_matrix((rng.random((80, 50)) < 0.15).astype(np.float32))
    whole = item_similarity(x, neighbours=5, shrink=3.0)
    monkeypatch.setattr(cooccurrence_module, "_BLOCK_ENTRIES", 120)  # two rows of 50 per block
    blocked = item_similarity(x, neighbours=5, shrink=3.0)
    assert (np.diff(blocked.indptr) <= 5).all()
    assert np.allclose(whole.toarray(), blocked.toarray())


def test_scores_sum_the_similarities_of_the_history_among_each_items_neighbours() -> None:
    model = fitted()
    catalog = CatalogBuilder().add("c").add("b").add("a").add("new").build()
    candidates = np.arange(4)

    after_a = RecommendationContext(page=Page.HOMEPAGE, history=SessionHistory(visited=("a",)))
    # b keeps a as its neighbour; c keeps only b
    assert np.allclose(model.score(after_a, catalog, candidates), [0.0, SIM_AB, 0.0, np.nan], equal_nan=True)

    after_b_twice = RecommendationContext(page=Page.HOMEPAGE, history=SessionHistory(visited=("b", "b")))
    assert np.allclose(
        model.score(after_b_twice, catalog, candidates), [2 * SIM_BC, 0.0, 2 * SIM_AB, np.nan], equal_nan=True
    )


def test_retrieval_for_a_product_page_returns_only_related_recommendable_items() -> None:
    model = fitted(neighbours=2)
    catalog = CatalogBuilder().add("c", stock=0).add("b").add("a").add("new").build()
    ctx = RecommendationContext(page=Page.PRODUCT_DETAIL, variants=("a",))
    assert model.is_ready(ctx, catalog)
    assert model.retrieve(ctx, catalog, 10).tolist() == [1]  # b; c is out of stock, "new" is unknown

    cart = RecommendationContext(page=Page.CART, cart=("c",))
    assert model.retrieve(cart, CatalogBuilder().add("a").add("b").build(), 10).tolist() == [1, 0]

    stranger = RecommendationContext(page=Page.HOMEPAGE, history=SessionHistory(visited=("new",)))
    assert not model.is_ready(stranger, catalog)
    assert model.retrieve(stranger, catalog, 10).size == 0
    assert np.isnan(model.score(stranger, catalog, np.arange(4))).all()


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    pairs = sorted({(f"u{rng.integers(30)}", f"i{rng.integers(25)}") for _ in range(200)})
    model = fitted(neighbours=4, shrink=2.0, pairs=pairs)
    model.save(tmp_path)
    loaded = CooccurrenceModel.load(tmp_path, "v3")

    assert loaded.identifier == "cooccurrence_v3"
    assert np.allclose(loaded.similarity.toarray(), model.similarity.toarray())
    catalog = CatalogBuilder().add("i1").add("i2").add("i3").add("zz").build()
    ctx = RecommendationContext(page=Page.CART, cart=("i1",), history=SessionHistory(ordered=("i5",)))
    candidates = np.arange(len(catalog))
    assert np.allclose(loaded.score(ctx, catalog, candidates), model.score(ctx, catalog, candidates), equal_nan=True)
