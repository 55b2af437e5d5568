"""Ranking metrics on hand-computed cases, the paired bootstrap, and protocol A on the real Online Retail file."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from tests.conftest import shared_path
from trainer import online_retail
from trainer.evaluation import evaluate_rankings, holdout_metrics, paired_bootstrap, rank_metrics, top_k


def rows_matrix(rows: list[list[int]], n_items: int) -> sp.csr_matrix:
    data = [(r, c) for r, cols in enumerate(rows) for c in cols]
    r, c = zip(*data, strict=True) if data else ((), ())
    return sp.csr_matrix((np.ones(len(data), dtype=np.float32), (r, c)), shape=(len(rows), n_items))


def test_top_k_orders_by_score_and_breaks_ties_by_lower_index() -> None:
    scores = np.array([[0.5, 0.9, 0.9, np.nan, 0.1], [3.0, 2.0, 1.0, 0.0, -1.0]])
    assert top_k(scores, 3).tolist() == [[1, 2, 0], [0, 1, 2]]


def test_top_k_removes_excluded_and_unscorable_items() -> None:
    scores = np.array([[0.5, 0.9, 0.9, np.nan, 0.1]])
    exclude = rows_matrix([[1]], 5)
    assert top_k(scores, 3, exclude=exclude).tolist() == [[2, 0, 4]]
    # only excluded or NaN items are left for the last positions: they are empty (-1)
    assert top_k(scores, 5, exclude=exclude).tolist() == [[2, 0, 4, -1, -1]]


def test_rank_metrics_hand_computed() -> None:
    top = np.array([[3, 1, 4], [0, 2, 5], [6, -1, -1]])
    relevant = rows_matrix([[1, 4, 7, 8], [0], [2]], 9)
    metrics = rank_metrics(top, relevant, k=3)
    dcg = 1 / math.log2(3) + 1 / math.log2(4)
    ideal = 1 + 1 / math.log2(3) + 1 / math.log2(4)  # min(k=3, |relevant|=4) ideal hits
    assert metrics["recall"] == pytest.approx([2 / 3, 1.0, 0.0])
    assert metrics["ndcg"] == pytest.approx([dcg / ideal, 1.0, 0.0])
    assert metrics["reciprocal_rank"] == pytest.approx([0.5, 1.0, 0.0])
    assert metrics["hit"] == pytest.approx([1.0, 1.0, 0.0])


def test_ndcg_ideal_dcg_uses_only_as_many_positions_as_test_items() -> None:
    # one test item found at rank 2 of a top 3: DCG 1/log2(3), ideal DCG 1 (not 1 + 1/log2(3) + 1/2)
    metrics = rank_metrics(np.array([[5, 2, 7]]), rows_matrix([[2]], 8), k=3)
    assert metrics["ndcg"] == pytest.approx([1 / math.log2(3)])
    assert metrics["recall"] == pytest.approx([1.0])


def test_evaluate_rankings_removes_training_items_and_measures_coverage() -> None:
    n_items = 6
    train = rows_matrix([[0], [1], []], n_items)
    test = rows_matrix([[2], [3], []], n_items)  # the third user has no test item: not evaluated
    base = np.array([9.0, 8.0, 7.0, 1.0, 0.5, 0.0])

    result = evaluate_rankings(lambda rows: np.tile(base, (len(rows), 1)), train, test, k=2)

    assert result.users.tolist() == [0, 1]
    # user 0: item 0 removed -> top [1, 2], hit at rank 2; user 1: item 1 removed -> top [0, 2], no hit
    assert result.recall.tolist() == [1.0, 0.0]
    assert result.reciprocal_rank.tolist() == [0.5, 0.0]
    assert result.recommended_items.tolist() == [0, 1, 2]
    summary = result.summary()
    assert summary["coverage@2"] == pytest.approx(3 / 6)
    assert summary["hr@2"] == pytest.approx(0.5)
    assert summary["ndcg@2"] == pytest.approx((1 / math.log2(3)) / 2)


def test_holdout_metrics_is_independent_of_the_batch_size() -> None:
    rng = np.random.default_rng(3)
    train = sp.csr_matrix((rng.random((40, 30)) < 0.2).astype(np.float32))
    test = sp.csr_matrix((rng.random((40, 30)) < 0.1).astype(np.float32))
    scores = rng.random((40, 30))
    one = holdout_metrics(lambda rows: scores[rows], train, test, batch_size=7)
    two = holdout_metrics(lambda rows: scores[rows], train, test, batch_size=100)
    assert one == pytest.approx(two)


def test_paired_bootstrap_detects_a_real_difference_only() -> None:
    rng = np.random.default_rng(0)
    base = rng.random(500)
    same = paired_bootstrap(base, base.copy(), resamples=200)
    assert same.difference == 0.0 and not same.significant

    improved = base + 0.05 + rng.normal(0, 0.01, 500)
    better = paired_bootstrap(improved, base, resamples=200, seed=1)
    assert better.significant and better.low > 0 and better.p_value == 0.0
    assert better.difference == pytest.approx(0.05, abs=0.005)
    assert paired_bootstrap(improved, base, resamples=200, seed=1) == better

    noisy = paired_bootstrap(base + rng.normal(0, 0.2, 500), base, resamples=200, seed=1)
    assert noisy.low < 0 < noisy.high and not noisy.significant


def test_protocol_main_rejects_unknown_models(capsys: pytest.CaptureFixture[str]) -> None:
    assert online_retail.main(["evaluate", "--dataset", "online-retail", "--model", "gru4rec"]) == 2
    assert "unknown model 'gru4rec'" in capsys.readouterr().err


@pytest.mark.slow
def test_protocol_a_reproduces_popularity_and_ease_on_online_retail() -> None:
    path = shared_path("data", "uci-online-retail", "online_retail_full_541909rows.parquet")
    split = online_retail.prepare(path)
    assert split.n_test_users == 1537 and split.test.nnz == 37051

    popularity = online_retail.evaluate("popularity", split)
    assert round(popularity.metrics["recall@20"], 3) == 0.052
    assert round(popularity.metrics["ndcg@20"], 3) == 0.044

    ease = online_retail.fit_model("ease", split, {"ease_config": {"l2_options": [300.0]}})
    metrics = online_retail.evaluate_model(ease, split, online_retail.catalog_of(split)).summary()
    assert metrics["recall@20"] >= 0.120 and metrics["ndcg@20"] >= 0.105
