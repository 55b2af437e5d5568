"""The pure array steps of the pipeline: de-duplication, admission, tiered ranking, diversity, stock order."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from recommender_system.prediction import ordering


def test_unique_in_order_keeps_first_occurrences() -> None:
    assert ordering.unique_in_order(np.array([4, 2, 4, 7, 2, 1])).tolist() == [4, 2, 7, 1]
    assert ordering.unique_in_order(np.array([], dtype=np.int64)).tolist() == []
    long = np.concatenate([np.arange(100, 0, -1), np.array([50, 3, 100])])  # the long path
    assert ordering.unique_in_order(long).tolist() == list(range(100, 0, -1))
    assert ordering.unique_in_order(np.arange(200)[::-1]).tolist() == list(range(199, -1, -1))


def test_admit_filters_invalid_disallowed_and_duplicates_and_marks_taken() -> None:
    allowed = np.array([True, True, False, True, True])
    first = ordering.admit(np.array([3, 9, -1, 2, 3, 0]), allowed)
    assert first.tolist() == [3, 0]  # 9 and -1 invalid, 2 not allowed, 3 repeated
    assert allowed.tolist() == [False, True, False, False, True]
    second = ordering.admit(np.array([0, 3, 4, 1]), allowed, limit=1)
    assert second.tolist() == [4]  # 0 and 3 already taken; the limit keeps one
    assert allowed.tolist() == [False, True, False, False, False]


def test_rank_tiered_orders_by_tier_then_score_then_position() -> None:
    scores = np.array([0.5, 9.0, 0.5, np.nan, 3.0, 1.0])
    tiers = np.array([0, 1, 0, 1, 0, 1])
    # tier 0: 4 (3.0), then 0 and 2 tie at 0.5 -> position order; tier 1: 1 (9.0), 5 (1.0); NaN last
    assert ordering.rank_tiered(scores, tiers).tolist() == [4, 0, 2, 1, 5, 3]


def test_rank_tiered_never_compares_scores_across_tiers() -> None:
    # the fallback model's huge scores do not jump ahead of the first model's small ones
    scores = np.array([1e9, 0.1])
    tiers = np.array([1, 0])
    assert ordering.rank_tiered(scores, tiers).tolist() == [1, 0]


@pytest.mark.parametrize("seed", range(6))
def test_rank_tiered_top_is_the_prefix_of_the_full_ranking(seed: int) -> None:
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 5, 300).astype(np.float64)  # many ties, as popularity has
    tiers = np.zeros(300, dtype=np.int64)
    if seed % 2:
        scores[rng.choice(300, 40, replace=False)] = np.nan
        tiers[rng.choice(300, 60, replace=False)] = 1
    full = ordering.rank_tiered(scores, tiers)
    assert sorted(full.tolist()) == list(range(300))
    for top in (0, 1, 10, 50, 149, 150, 299, 300, 1000):
        assert ordering.rank_tiered(scores, tiers, top).tolist() == full[:top].tolist()


def _reference_greedy(distances: np.ndarray) -> list[int]:
    """The ecoseller formulation: add the item maximising the mean of the selected sub-matrix (O(k^4))."""
    k = len(distances)
    selected = [0]
    while len(selected) < k:
        best, best_value = None, -np.inf
        for candidate in range(k):
            if candidate in selected:
                continue
            subset = [*selected, candidate]
            value = distances[np.ix_(subset, subset)].mean()
            if value > best_value + 1e-12:
                best, best_value = candidate, value
        selected.append(best)
    return selected


@pytest.mark.parametrize("seed", range(5))
def test_diversify_matches_the_submatrix_mean_greedy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    points = rng.random((12, 3))
    distances = np.linalg.norm(points[:, None] - points[None, :], axis=2)
    assert ordering.diversify(distances).tolist() == _reference_greedy(distances)


def test_diversify_spreads_clusters_and_keeps_the_best_first() -> None:
    # items 0,1,2 are near-identical, 3 and 4 far away: after 0 the far ones come before the near duplicates
    points = np.array([[0.0, 0.0], [0.01, 0.0], [0.02, 0.0], [10.0, 0.0], [0.0, 10.0]])
    distances = np.linalg.norm(points[:, None] - points[None, :], axis=2)
    assert ordering.diversify(distances).tolist() == [0, 3, 4, 2, 1]


def test_diversify_breaks_ties_by_rank_and_treats_nan_as_zero() -> None:
    distances = np.ones((5, 5)) - np.eye(5)
    assert ordering.diversify(distances).tolist() == [0, 1, 2, 3, 4]
    with_nan = distances.copy()
    with_nan[0, 1] = with_nan[1, 0] = np.nan
    # 1 is at distance 0 (NaN) from 0, so after 0, 2 it trails 3 and 4 (sums 1 against 2)
    assert ordering.diversify(with_nan).tolist() == [0, 2, 3, 4, 1]


def test_diversify_small_inputs() -> None:
    assert ordering.diversify(np.zeros((0, 0))).tolist() == []
    assert ordering.diversify(np.zeros((1, 1))).tolist() == [0]
    assert ordering.diversify(np.zeros((2, 2))).tolist() == [0, 1]


def test_diversify_is_incremental_not_quartic() -> None:
    # 1000 items: the O(k^2) greedy finishes quickly; the O(k^4) one would not
    rng = np.random.default_rng(0)
    distances = rng.random((1000, 1000))
    order = ordering.diversify(distances)
    assert sorted(order.tolist()) == list(range(1000))


def test_stock_last_is_a_stable_partition() -> None:
    in_stock = np.array([True, False, True, False, True])
    assert ordering.stock_last(np.array([3, 0, 1, 4, 2]), in_stock).tolist() == [0, 4, 2, 3, 1]
    assert ordering.stock_last(np.array([0, 2]), in_stock).tolist() == [0, 2]


def test_group_positions_first_position_or_ranking_length() -> None:
    ranked_products = np.array([30, 10, 30, 20, -1])
    products = np.array([10, 20, 30, 40])
    assert ordering.group_positions(ranked_products, products).tolist() == [1, 3, 0, 5]
    assert ordering.group_positions(np.array([], dtype=np.int64), products).tolist() == [0, 0, 0, 0]


@pytest.mark.parametrize("permutation", list(itertools.permutations(range(4)))[:6])
def test_unique_in_order_on_permutations_is_identity(permutation: tuple[int, ...]) -> None:
    values = np.array(permutation)
    assert ordering.unique_in_order(values).tolist() == list(permutation)


@pytest.mark.parametrize("picks", [1, 2, 3, 7, 12, 40])
def test_diversify_with_picks_chooses_the_same_head_and_keeps_the_rest_in_rank_order(picks: int) -> None:
    rng = np.random.default_rng(picks)
    points = rng.random((12, 3))
    distances = np.linalg.norm(points[:, None] - points[None, :], axis=2)
    full = ordering.diversify(distances).tolist()
    partial = ordering.diversify(distances, picks).tolist()
    head = full[: min(picks, 12)]
    assert partial[: len(head)] == head
    assert partial[len(head) :] == sorted(set(range(12)) - set(head))
