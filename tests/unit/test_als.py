"""ALS: the fold-in solves implicit's least squares, known and anonymous shoppers, holdout quality, the artefact."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares
from threadpoolctl import threadpool_limits

from recommender_system.domain import Page, RecommendationContext, SessionHistory
from recommender_system.prediction.config import EventWeights
from recommender_system.prediction.models.als import AlsModel, fold_in
from recommender_system.prediction.models.base import TrainingData
from recommender_system.prediction.models.interactions import build_interactions
from tests.factories import CatalogBuilder, is_mapped

T0 = datetime(2024, 3, 1)
BINARY = {"view": 1.0, "cart": 1.0, "order": 1.0, "review_per_star": 1.0}
SMALL = {"factors": 6, "regularization": 0.5, "alpha": 4.0, "iterations": 8}


def group_events(n_users: int, n_items: int, per_user: int, seed: int) -> pd.DataFrame:
    """Users of 5 taste groups viewing items of their group, at random times; some users are anonymous sessions."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(n_users):
        own = np.flatnonzero(np.arange(n_items) % 5 == user % 5)
        key = f"u{user}" if user % 4 else f"s:sess{user}"
        for item in rng.choice(own, size=per_user, replace=False):
            rows.append((key, f"i{item:03d}"))
    minutes = np.sort(rng.uniform(0, 60 * 24 * 30, len(rows)))
    rows = [rows[k] for k in rng.permutation(len(rows))]
    return pd.DataFrame(
        {
            "user_key": [u for u, _ in rows],
            "session_id": [u.removeprefix("s:") for u, _ in rows],
            "sku": [s for _, s in rows],
            "event": "view",
            "weight": 1.0,
            "timestamp": [T0 + timedelta(minutes=float(m)) for m in minutes],
        }
    )


def fitted(events: pd.DataFrame, holdout: bool = False, seed: int = 0, **config: float) -> tuple[AlsModel, dict]:
    model = AlsModel()
    hyperparameters = {"event_weights": BINARY, "holdout": holdout, "als_config": {**SMALL, **config}}
    report = model.fit(TrainingData(events=events, hyperparameters=hyperparameters, seed=seed))
    return model, report.metrics


def test_fold_in_solves_the_same_least_squares_as_implicit() -> None:
    rng = np.random.default_rng(0)
    x = sp.csr_matrix((rng.random((60, 30)) < 0.2).astype(np.float32))
    with threadpool_limits(1, user_api="blas"):
        reference = AlternatingLeastSquares(factors=6, regularization=0.7, alpha=3.0, iterations=4, random_state=0)
        reference.fit(x, show_progress=False)
    items = np.array([2, 7, 11, 20])
    values = np.array([1.0, 2.5, 1.0, 0.5], dtype=np.float32)
    row = sp.csr_matrix((values, (np.zeros(4, dtype=int), items)), shape=(1, 30))
    expected = reference.recalculate_user(0, row)

    factors = reference.item_factors
    ours = fold_in(factors, factors.astype(np.float64).T @ factors, items, values, 0.7, 3.0)
    assert np.allclose(ours, expected, rtol=1e-3, atol=1e-5)


def test_known_users_and_sessions_use_their_factors_and_strangers_are_folded_in() -> None:
    events = group_events(n_users=40, n_items=25, per_user=4, seed=1)
    model, _ = fitted(events)
    catalog = CatalogBuilder()
    for sku in reversed(model.items.tolist()):
        catalog.add(sku)
    catalog = catalog.add("new").build()
    candidates = np.arange(len(catalog))
    to_catalog = catalog.indices(model.items.tolist())
    users = build_interactions(events, EventWeights(**BINARY)).users.tolist()

    known = RecommendationContext(page=Page.HOMEPAGE, user_id="u1")
    expected = model.item_factors @ model.user_factors[users.index("u1")]
    scores = model.score(known, catalog, candidates)
    assert np.allclose(scores[to_catalog], expected, rtol=1e-5) and np.isnan(scores[-1])

    session = RecommendationContext(page=Page.HOMEPAGE, session_id="sess0")
    assert np.allclose(
        model.score(session, catalog, candidates)[to_catalog],
        model.item_factors @ model.user_factors[users.index("s:sess0")],
        rtol=1e-5,
    )

    stranger = RecommendationContext(page=Page.CART, session_id="fresh", cart=("i000", "new"))
    assert model.is_ready(stranger, catalog)
    index = model.items.tolist().index("i000")
    vector = fold_in(
        model.item_factors,
        model.item_factors.T.astype(np.float64) @ model.item_factors,
        np.array([index]),
        np.array([1.0]),
        SMALL["regularization"],
        SMALL["alpha"],
    )
    assert np.allclose(model.score(stranger, catalog, candidates)[to_catalog], model.item_factors @ vector, rtol=1e-4)

    nobody = RecommendationContext(page=Page.HOMEPAGE, user_id="u999", history=SessionHistory(visited=("new",)))
    assert not model.is_ready(nobody, catalog)
    assert np.isnan(model.score(nobody, catalog, candidates)).all()
    assert model.retrieve(nobody, catalog, 5).size == 0


def test_holdout_metrics_show_it_learns_the_taste_groups() -> None:
    events = group_events(n_users=300, n_items=100, per_user=8, seed=2)
    model, metrics = fitted(events, holdout=True, factors=8, regularization=1.0, alpha=5.0, iterations=10)
    assert set(metrics) >= {"recall@20", "ndcg@20", "mrr@20", "hr@20", "coverage@20"}
    # a random top 20 of ~100 items finds about a fifth of the test items; the groups make it about all of them
    assert metrics["recall@20"] > 0.6

    catalog = CatalogBuilder()
    for sku in model.items.tolist():
        catalog.add(sku)
    catalog = catalog.build()
    shopper = RecommendationContext(page=Page.HOMEPAGE, history=SessionHistory(visited=("i003", "i008", "i013")))
    top = model.retrieve(shopper, catalog, 20)
    groups = np.array([int(sku[1:]) % 5 for sku in catalog.skus[top]])
    assert (groups == 3).mean() == 1.0


def test_same_seed_same_model_and_a_round_trip(tmp_path: Path) -> None:
    events = group_events(n_users=30, n_items=20, per_user=4, seed=3)
    first, _ = fitted(events, seed=5)
    second, _ = fitted(events, seed=5)
    assert np.array_equal(first.item_factors, second.item_factors)

    first.save(tmp_path)
    loaded = AlsModel.load(tmp_path, "v2")
    assert loaded.identifier == "als_v2" and is_mapped(loaded.user_factors)
    catalog = CatalogBuilder().add("i004").add("i001").add("other").build()
    for ctx in (
        RecommendationContext(page=Page.HOMEPAGE, user_id="u1"),
        RecommendationContext(page=Page.PRODUCT_DETAIL, variants=("i001",)),
    ):
        assert np.allclose(
            loaded.score(ctx, catalog, np.arange(3)), first.score(ctx, catalog, np.arange(3)), equal_nan=True
        )


def test_fit_refuses_data_without_interactions() -> None:
    with pytest.raises(ValueError):
        AlsModel().fit(TrainingData(events=group_events(4, 5, 1, 0).iloc[0:0]))
