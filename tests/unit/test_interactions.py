"""The weighted user x item matrix, the time split, the request's item vector and the catalogue alignment."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recommender_system.domain import Page, RecommendationContext, SessionHistory
from recommender_system.prediction.config import EaseConfig, EventWeights
from recommender_system.prediction.models.interactions import (
    CatalogAlignment,
    build_interactions,
    config_from,
    context_items,
    event_weights_from,
    pairs_matrix,
    retrieve_top,
    scores_for_candidates,
    time_split,
    weighted_row_sum,
)
from tests.factories import CatalogBuilder

T0 = datetime(2024, 5, 1, 10, 0, 0)


def events(rows: list[tuple[str, str, str, float]]) -> pd.DataFrame:
    """(user_key, sku, event, weight) rows, one minute apart."""
    frame = pd.DataFrame(rows, columns=["user_key", "sku", "event", "weight"])
    frame["session_id"] = frame["user_key"]
    frame["timestamp"] = [T0 + timedelta(minutes=k) for k in range(len(rows))]
    return frame


def test_matrix_weighs_each_kind_of_event_and_adds_repeats() -> None:
    weights = EventWeights(view=1.0, cart=3.0, order=5.0, review_per_star=2.0)
    frame = events(
        [
            ("u1", "b", "view", 1.0),
            ("u1", "b", "view", 1.0),
            ("u1", "a", "cart", 1.0),
            ("u1", "c", "order", 4.0),  # quantity 4
            ("u2", "a", "review", 3.0),  # 3 stars
            ("u2", "c", "recommendation_view", 1.0),  # not an interaction
        ]
    )
    fitted = build_interactions(frame, weights)

    assert fitted.items.tolist() == ["a", "b", "c"]
    assert fitted.users.tolist() == ["u1", "u2"]
    assert fitted.matrix.dtype == np.float32
    assert fitted.matrix.toarray().tolist() == [[3.0, 2.0, 20.0], [6.0, 0.0, 0.0]]


def test_zero_weight_events_leave_the_matrix() -> None:
    frame = events([("u1", "a", "view", 1.0), ("u2", "b", "order", 1.0)])
    fitted = build_interactions(frame, EventWeights(view=0.0))
    assert fitted.items.tolist() == ["b"] and fitted.users.tolist() == ["u2"]


def test_item_cap_keeps_the_most_frequent_items_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    rows = [(f"u{u}", "pop", "view", 1.0) for u in range(5)]
    rows += [(f"u{u}", "mid", "view", 1.0) for u in range(3)]
    rows += [("u9", "rare", "view", 1.0)]
    with caplog.at_level(logging.INFO):
        fitted = build_interactions(events(rows), EventWeights(), max_items=2)
    assert fitted.items.tolist() == ["mid", "pop"]
    assert "u9" not in fitted.users.tolist()  # its only item was dropped
    assert any("item cap" in message and "2 most frequent of 3" in message for message in caplog.messages)


def test_configs_come_from_a_nested_dict_an_instance_or_top_level_fields() -> None:
    assert config_from({"ease_config": {"l2_options": [5.0]}}, "ease_config", EaseConfig).l2_options == [5.0]
    assert config_from({"ease_config": EaseConfig(max_items=11)}, "ease_config", EaseConfig).max_items == 11
    assert config_from({"l2_options": [7.0], "unrelated": 1}, "ease_config", EaseConfig).l2_options == [7.0]
    assert config_from({}, "ease_config", EaseConfig) == EaseConfig()
    assert event_weights_from({"event_weights": {"order": 1.0}}).order == 1.0
    assert event_weights_from({}) == EventWeights()


def test_time_split_cuts_at_the_quantile_of_first_times_and_keeps_only_new_known_pairs() -> None:
    frame = events(
        [
            ("u1", "a", "order", 1.0),
            ("u1", "b", "order", 1.0),
            ("u2", "a", "order", 1.0),
            ("u2", "b", "order", 1.0),
            ("u3", "c", "order", 1.0),
            ("u1", "a", "order", 1.0),  # a repeat after the cut: never a test pair
            ("u1", "c", "order", 1.0),
            ("u2", "d", "order", 1.0),  # d is unknown to train
            ("u4", "a", "order", 1.0),  # u4 is unknown to train
        ]
    )
    split = time_split(frame, quantile=0.6)
    assert split is not None
    # eight distinct pairs first seen at minutes 0-4, 6, 7, 8: the 0.6 quantile is 4 + 0.2 * (6 - 4) = 4.4
    assert split.cut == pytest.approx(pd.Timestamp(T0 + timedelta(minutes=4.4), tz="UTC").timestamp())
    assert len(split.train) == 5
    assert split.test_pairs.values.tolist() == [["u1", "c"]]


def test_time_split_is_none_without_a_usable_test_side() -> None:
    assert time_split(events([("u1", "a", "view", 1.0), ("u2", "b", "view", 1.0)])) is None
    assert time_split(events([])) is None


def test_pairs_matrix_aligns_with_the_fitted_matrix_and_drops_unknowns() -> None:
    fitted = build_interactions(events([("u1", "a", "view", 1.0), ("u2", "b", "view", 1.0)]), EventWeights())
    pairs = pd.DataFrame({"user_key": ["u2", "u2", "u9", "u1"], "sku": ["a", "a", "a", "zz"]})
    assert pairs_matrix(fitted, pairs).toarray().tolist() == [[0.0, 0.0], [1.0, 0.0]]


def test_context_items_weighs_history_and_anchors() -> None:
    weights = EventWeights(view=1.0, cart=3.0, order=5.0, review_per_star=0.5)
    index = {"a": 0, "b": 1, "c": 2, "d": 3}
    ctx = RecommendationContext(
        page=Page.CART,
        cart=("d", "unknown"),
        history=SessionHistory(visited=("a", "a", "b", "nope"), carted=("b",), ordered=("c",), rated=(("c", 4.0),)),
    )
    indices, values = context_items(ctx, index, weights)
    assert indices.tolist() == [0, 1, 2, 3]
    assert values.tolist() == [2.0, 4.0, 7.0, 5.0]  # anchors weigh the strongest event weight (order, 5)

    only_anchor = context_items(ctx, index, weights, anchor_weight=9.0)
    assert only_anchor[1][-1] == 9.0
    # anchors are ignored on pages that have none
    home = RecommendationContext(page=Page.HOMEPAGE, cart=("d",))
    assert context_items(home, index, weights)[0].size == 0


def test_catalog_alignment_is_cached_per_revision_and_rebuilt_on_a_new_one() -> None:
    alignment = CatalogAlignment(np.array(["a", "b", "c"], dtype=object))
    first = CatalogBuilder(revision=1).add("c").add("x").add("a").build()
    to_catalog, to_model = alignment.arrays(first)
    assert to_catalog.tolist() == [2, -1, 0] and to_model.tolist() == [2, -1, 0]
    assert alignment.arrays(first)[0] is to_catalog

    second = CatalogBuilder(revision=2).add("b").add("c").build()
    to_catalog, to_model = alignment.arrays(second)
    assert to_catalog.tolist() == [-1, 0, 1] and to_model.tolist() == [1, 2]


def test_candidate_scores_are_nan_for_unknown_items_and_retrieval_skips_unrecommendable_ones() -> None:
    alignment = CatalogAlignment(np.array(["a", "b", "c"], dtype=object))
    catalog = CatalogBuilder().add("b").add("new").add("a").add("c", stock=0).build()
    item_scores = np.array([0.3, 0.9, 2.0])
    assert np.allclose(
        scores_for_candidates(item_scores, alignment, catalog, np.array([2, 1, 0, 3])),
        [0.3, np.nan, 0.9, 2.0],
        equal_nan=True,
    )
    # c scores best but is out of stock; "new" is unknown to the model
    assert retrieve_top(item_scores, alignment, catalog, 10).tolist() == [0, 2]
    assert retrieve_top(item_scores, alignment, catalog, 1).tolist() == [0]


@pytest.mark.parametrize("size", [1, 3, 10, 49, 50, 120, 500])
def test_retrieval_of_a_few_equals_the_head_of_the_full_ranking(size: int) -> None:
    """The partial selection returns exactly the first ``size`` of the full sort: score descending, ties (many
    here: scores are rounded) by catalogue position, unrecommendable and NaN-scored items left out."""
    rng = np.random.default_rng(size)
    skus = [f"v{i}" for i in range(300)]
    builder = CatalogBuilder()
    for position in rng.permutation(300):  # catalogue order differs from the model's item order
        builder.add(skus[position], stock=int(rng.random() > 0.1))
    catalog = builder.build()
    alignment = CatalogAlignment(np.array(skus, dtype=object))
    item_scores = np.round(rng.random(300), 1)
    item_scores[rng.choice(300, 20, replace=False)] = np.nan
    to_catalog, _ = alignment.arrays(catalog)
    usable = np.flatnonzero(catalog.recommendable[to_catalog] & ~np.isnan(item_scores))
    expected = sorted(usable.tolist(), key=lambda item: (-item_scores[item], to_catalog[item]))
    assert retrieve_top(item_scores, alignment, catalog, size).tolist() == to_catalog[expected][:size].tolist()


@pytest.mark.parametrize("seed", range(4))
def test_weighted_row_sum_equals_the_sparse_product(seed: int) -> None:
    rng = np.random.default_rng(seed)
    keep = np.ones(40, dtype=np.float32)
    keep[3] = 0  # an empty row among the chosen ones
    matrix = sp.csr_matrix(sp.diags(keep) @ sp.random(40, 30, density=0.15, random_state=seed, dtype=np.float32))
    matrix.eliminate_zeros()
    rows = np.array([0, 3, 7, 7, 21, 39])  # repeated rows add up
    weights = rng.random(len(rows)).astype(np.float32)
    expected = np.asarray(matrix[rows].T.astype(np.float64) @ weights.astype(np.float64)).ravel()
    got = weighted_row_sum(matrix, rows, weights)
    assert got.dtype == np.float64 and got.shape == (30,)
    assert np.allclose(got, expected, rtol=1e-12, atol=1e-12)
    assert weighted_row_sum(matrix, np.array([3]), np.array([2.0])).tolist() == [0.0] * 30
    assert weighted_row_sum(matrix, np.array([], dtype=np.int64), np.array([])).tolist() == [0.0] * 30


def test_retrieval_follows_stock_changes_of_a_new_catalogue_revision() -> None:
    alignment = CatalogAlignment(np.array(["a", "b"], dtype=object))
    item_scores = np.array([2.0, 1.0])
    before = CatalogBuilder(revision=1).add("a").add("b").build()
    assert retrieve_top(item_scores, alignment, before, 10).tolist() == [0, 1]
    sold_out = CatalogBuilder(revision=2).add("a", stock=0).add("b").build()
    assert retrieve_top(item_scores, alignment, sold_out, 10).tolist() == [1]
    assert retrieve_top(item_scores, alignment, before, 10).tolist() == [0, 1]  # back to revision 1
