"""EASE: the closed form on a hand case, agreement with a float64 numpy reference, lambda selection, serving, I/O."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recommender_system.domain import Page, RecommendationContext, SessionHistory
from recommender_system.prediction.config import EventWeights
from recommender_system.prediction.models import ease as ease_module
from recommender_system.prediction.models.base import FitReport, ModelNotFittedError, TrainingData
from recommender_system.prediction.models.ease import EaseModel, ease_weights, gram_matrix, spd_inverse_inplace
from recommender_system.prediction.models.interactions import build_interactions, top_k
from tests.factories import CatalogBuilder, is_mapped

T0 = datetime(2024, 1, 1)
BINARY = {"view": 1.0, "cart": 1.0, "order": 1.0, "review_per_star": 1.0}


def order_events(pairs: list[tuple[str, str]], minutes: list[float] | None = None) -> pd.DataFrame:
    minutes = minutes if minutes is not None else list(range(len(pairs)))
    return pd.DataFrame(
        {
            "user_key": [u for u, _ in pairs],
            "session_id": [u for u, _ in pairs],
            "sku": [s for _, s in pairs],
            "event": "order",
            "weight": 1.0,
            "timestamp": [T0 + timedelta(minutes=float(m)) for m in minutes],
        }
    )


def synthetic_events(n_users: int, n_items: int, per_user: int, seed: int) -> pd.DataFrame:
    """Users of 10 taste groups buying mostly items of their group, at random times over 100 days."""
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.7
    groups = np.arange(n_items) % 10
    pairs: list[tuple[str, str]] = []
    for user in range(n_users):
        own = np.flatnonzero(groups == user % 10)
        mine = rng.choice(own, size=min(per_user, len(own)), replace=False, p=popularity[own] / popularity[own].sum())
        other = rng.choice(n_items, size=per_user // 3, replace=False, p=popularity / popularity.sum())
        pairs += [(f"u{user:04d}", f"i{item:04d}") for item in np.union1d(mine, other)]
    minutes = np.sort(rng.uniform(0, 100 * 24 * 60, size=len(pairs)))
    order = rng.permutation(len(pairs))
    return order_events([pairs[k] for k in order], list(minutes))


def fit(events: pd.DataFrame, **ease_config: object) -> tuple[EaseModel, FitReport]:
    model = EaseModel()
    hyperparameters = {"event_weights": BINARY, "holdout": False, "ease_config": ease_config}
    return model, model.fit(TrainingData(events=events, hyperparameters=hyperparameters))


def reference_weights(matrix: np.ndarray, l2: float) -> np.ndarray:
    """Steck's closed form in plain numpy float64."""
    gram = matrix.T @ matrix + l2 * np.eye(matrix.shape[1])
    inverse = np.linalg.inv(gram)
    weights = -inverse / np.diag(inverse)
    np.fill_diagonal(weights, 0.0)
    return weights


def test_hand_case_two_items_always_bought_together() -> None:
    # X = [[1,1,0],[1,1,0],[0,0,1]], lambda 1: (G + I)^-1 has [[3,-2],[-2,3]]/5 and 1/2, so B_ab = B_ba = 2/3
    events = order_events([("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "b"), ("u3", "c")])
    model, _ = fit(events, l2_options=[1.0])
    expected = np.array([[0.0, 2 / 3, 0.0], [2 / 3, 0.0, 0.0], [0.0, 0.0, 0.0]])
    assert model.items.tolist() == ["a", "b", "c"]
    assert np.allclose(model.weights_matrix, expected, atol=1e-6)

    catalog = CatalogBuilder().add("c").add("b").add("a").build()
    ctx = RecommendationContext(page=Page.HOMEPAGE, history=SessionHistory(ordered=("a",)))
    assert np.allclose(model.score(ctx, catalog, np.array([0, 1, 2])), [0.0, 2 / 3, 0.0], atol=1e-6)


def test_blocked_inverse_matches_numpy_across_block_boundaries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ease_module, "_LEAF", 16)
    monkeypatch.setattr(ease_module, "_BLOCK", 7)
    rng = np.random.default_rng(1)
    x = (rng.random((200, 101)) < 0.1).astype(np.float64)
    spd = x.T @ x + 5.0 * np.eye(101)
    inverse = spd.astype(np.float32)
    spd_inverse_inplace(inverse)
    assert np.allclose(inverse, np.linalg.inv(spd), rtol=1e-4, atol=1e-6)
    assert np.array_equal(inverse, inverse.T)


def test_top_20_lists_equal_the_float64_numpy_reference_for_99_percent_of_users(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ease_module, "_LEAF", 128)  # exercise the blocked path as well
    events = synthetic_events(n_users=800, n_items=400, per_user=15, seed=7)
    model, _ = fit(events, l2_options=[30.0])
    fitted = build_interactions(events, EventWeights(**BINARY))
    assert model.items.tolist() == fitted.items.tolist()
    x = fitted.matrix

    ours = top_k(x @ model.weights_matrix, 20, exclude=x)
    reference = top_k(x.toarray().astype(np.float64) @ reference_weights(x.toarray(), 30.0), 20, exclude=x)
    same = (ours == reference).all(axis=1).mean()
    assert same >= 0.99, f"only {same:.3f} of the users have the reference top 20"


def test_lambda_selection_picks_the_best_validation_ndcg() -> None:
    events = synthetic_events(n_users=400, n_items=150, per_user=12, seed=3)
    options = [0.5, 60.0, 20000.0]
    single = {}
    for l2 in options:
        model = EaseModel()
        report = model.fit(TrainingData(events=events, hyperparameters={"event_weights": BINARY, "l2_options": [l2]}))
        single[l2] = report.metrics["ndcg@20"]
    assert len(set(single.values())) == 3, "the case must tell the options apart"

    model = EaseModel()
    report = model.fit(TrainingData(events=events, hyperparameters={"event_weights": BINARY, "l2_options": options}))
    best = max(single, key=single.get)
    assert report.hyperparameters["l2"] == best == model.l2
    assert report.metrics["ndcg@20"] == pytest.approx(single[best])
    assert {float(k): v for k, v in report.hyperparameters["validation_ndcg"].items()} == pytest.approx(single)
    assert set(report.metrics) >= {"recall@20", "ndcg@20", "mrr@20", "hr@20", "coverage@20"}


def test_item_cap_keeps_the_most_frequent_items(caplog: pytest.LogCaptureFixture) -> None:
    events = synthetic_events(n_users=200, n_items=60, per_user=8, seed=5)
    frequency = events.groupby("sku")["user_key"].nunique().sort_values(ascending=False, kind="stable")
    with caplog.at_level(logging.INFO):
        model, _ = fit(events, l2_options=[10.0], max_items=12)
    assert len(model.items) == 12 and model.weights_matrix.shape == (12, 12)
    assert set(model.items) == set(frequency.index[:12])
    assert any("item cap" in message for message in caplog.messages)


def test_unknown_items_score_nan_and_readiness_needs_a_known_item() -> None:
    events = order_events([("u1", "a"), ("u1", "b"), ("u2", "b"), ("u2", "c")])
    model, _ = fit(events, l2_options=[1.0])
    catalog = CatalogBuilder().add("new").add("b").add("a").add("c", stock=0).build()

    unknown = RecommendationContext(page=Page.HOMEPAGE, history=SessionHistory(visited=("new",)))
    assert not model.is_ready(unknown, catalog)
    assert np.isnan(model.score(unknown, catalog, np.array([1, 2]))).all()

    ctx = RecommendationContext(page=Page.PRODUCT_DETAIL, variants=("a",))
    assert model.is_ready(ctx, catalog)
    scores = model.score(ctx, catalog, np.array([0, 1, 2, 3]))
    assert np.isnan(scores[0]) and not np.isnan(scores[1:]).any()
    # "b" is bought with "a"; "c" is out of stock, so retrieval skips it; "new" is unknown
    retrieved = model.retrieve(
        RecommendationContext(page=Page.HOMEPAGE, history=SessionHistory(carted=("a",))), catalog, 5
    )
    assert retrieved.tolist()[0] == 1 and 3 not in retrieved.tolist() and 0 not in retrieved.tolist()


def test_save_and_load_round_trip_memory_maps_b(tmp_path: Path) -> None:
    events = synthetic_events(n_users=60, n_items=40, per_user=6, seed=2)
    model, _ = fit(events, l2_options=[20.0])
    model.save(tmp_path)
    loaded = EaseModel.load(tmp_path, "v7")

    assert is_mapped(loaded.weights_matrix) and loaded.weights_matrix.dtype == np.float32
    assert loaded.identifier == "ease_v7" and loaded.l2 == 20.0
    catalog = CatalogBuilder().add("i0003").add("i0001").add("zzz").add("i0002").build()
    ctx = RecommendationContext(page=Page.HOMEPAGE, history=SessionHistory(visited=("i0001", "i0005")))
    candidates = np.arange(len(catalog))
    assert np.allclose(loaded.score(ctx, catalog, candidates), model.score(ctx, catalog, candidates), equal_nan=True)
    assert loaded.retrieve(ctx, catalog, 3).tolist() == model.retrieve(ctx, catalog, 3).tolist()


def test_an_unfitted_model_refuses_to_serve_or_save(tmp_path: Path) -> None:
    model = EaseModel()
    ctx = RecommendationContext(page=Page.HOMEPAGE, history=SessionHistory(visited=("a",)))
    assert not model.is_ready(ctx, CatalogBuilder().add("a").build())
    with pytest.raises(ModelNotFittedError):
        model.save(tmp_path)


def test_ease_weights_rejects_a_non_float32_gram() -> None:
    with pytest.raises(ValueError):
        ease_weights(np.eye(3), 1.0)
    assert gram_matrix(build_interactions(order_events([("u", "a")]), EventWeights()).matrix).dtype == np.float32


def test_gram_matrix_in_column_blocks_equals_x_transpose_x(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ease_module, "_BLOCK", 7)
    rng = np.random.default_rng(6)
    x = sp.csr_matrix((rng.random((50, 30)) < 0.2) * rng.integers(1, 4, (50, 30)), dtype=np.float32)
    gram = gram_matrix(x)
    assert gram.dtype == np.float32 and gram.flags.c_contiguous
    assert np.array_equal(gram, (x.T @ x).toarray())
