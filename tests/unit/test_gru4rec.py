"""GRU4Rec: session-parallel batches, losses, optimiser, learning, determinism, serving, artefact, protocol B."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from recommender_system.domain import CatalogSnapshot, Page, RecommendationContext, SessionHistory
from recommender_system.prediction.config import Gru4recConfig
from recommender_system.prediction.models.base import ModelNotFittedError, TrainingData
from recommender_system.prediction.models.gru4rec import Gru4recModel
from recommender_system.prediction.models.gru4rec.batches import (
    NegativeSampler,
    SessionArrays,
    session_parallel_steps,
)
from recommender_system.prediction.models.gru4rec.model import session_frame
from recommender_system.prediction.models.gru4rec.network import Gru4recNetwork
from recommender_system.prediction.models.gru4rec.training import (
    AdagradMomentum,
    Gru4recParams,
    ThreadSchedule,
    bpr_max,
    parameter_grid,
    sampled_cross_entropy,
    train_network,
)
from trainer import session_evaluation as protocol

SMALL = {
    "num_epochs": 1,
    "batch_size": 8,
    "hidden_size": 16,
    "n_sample": 8,
    "num_threads": 1,
    "dropout_p_embed": 0.0,
    "dropout_p_hidden": 0.0,
}


# --- helpers ------------------------------------------------------------------------------------------------
def arrays_of(sessions: list[list[int]], starts: list[int] | None = None) -> SessionArrays:
    rows = []
    for number, items in enumerate(sessions):
        start = starts[number] if starts else number
        rows += [(number, item, start * 100 + k) for k, item in enumerate(items)]
    frame = pd.DataFrame(rows, columns=["SessionId", "ItemIdx", "Time"])
    return SessionArrays.from_frame(frame)


def events_of(sessions: list[list[str]], event: str = "view") -> pd.DataFrame:
    rows = []
    base = pd.Timestamp("2024-01-01", tz="UTC")
    for number, skus in enumerate(sessions):
        for k, sku in enumerate(skus):
            stamp = base + pd.Timedelta(minutes=number) + pd.Timedelta(seconds=k)
            rows.append(("s:" + str(number), str(number), sku, event, 1.0, stamp))
    frame = pd.DataFrame(rows, columns=["user_key", "session_id", "sku", "event", "weight", "timestamp"])
    return frame.sort_values("timestamp", kind="stable").reset_index(drop=True)


def catalog_of(skus: list[str], revision: int = 1) -> CatalogSnapshot:
    n = len(skus)
    return CatalogSnapshot(
        revision=revision,
        skus=np.array(skus, dtype=object),
        product_ids=np.arange(n, dtype=np.int64),
        stock=np.ones(n, dtype=np.int64),
        eligible=np.ones(n, dtype=bool),
        weights=np.ones(n),
        created_at=np.zeros(n),
        units_ordered=np.zeros(n),
        recent_units_ordered=np.zeros(n),
    )


def context(*visited: str) -> RecommendationContext:
    return RecommendationContext(page=Page.HOMEPAGE, session_id="x", history=SessionHistory(session_visited=visited))


def pattern_sessions(copies: int = 30) -> list[list[str]]:
    """Fixed sequences sharing their middle item: what follows ``m`` depends on the item before it."""
    patterns = [["a", "m", "b", "c"], ["d", "m", "e", "f"], ["g", "m", "h", "i"], ["j", "k", "l", "a"]]
    return [list(patterns[i % len(patterns)]) for i in range(copies * len(patterns))]


@pytest.fixture(scope="module")
def pattern_model() -> Gru4recModel:
    """A GRU4Rec model trained on the fixed sequences (a couple of seconds on one CPU thread)."""
    model = Gru4recModel()
    params = {
        "num_epochs": 20,
        "batch_size": 16,
        "hidden_size": 32,
        "n_sample": 16,
        "sample_alpha": 0.0,
        "learning_rate": 0.1,
        "dropout_p_embed": 0.0,
        "dropout_p_hidden": 0.0,
        "num_threads": 1,
    }
    model.fit(TrainingData(events=events_of(pattern_sessions()), hyperparameters=params, seed=3))
    return model


# --- session-parallel batches -----------------------------------------------------------------------------
def test_batches_see_every_transition_once_and_reset_at_session_boundaries() -> None:
    sessions = [[0, 1, 2], [3, 4], [5], [6, 7, 8, 9, 0], [1, 2], [3, 4, 5, 6], [7, 8], [9, 9, 1]]
    arrays = arrays_of(sessions)
    seen: Counter[tuple[int, int, int]] = Counter()
    steps_since_reset = np.zeros(0, dtype=np.int64)  # a fake hidden state: steps since the slot's last reset
    slot_sessions = np.zeros(0, dtype=np.int64)
    for number, step in enumerate(session_parallel_steps(arrays, batch_size=3)):
        if number == 0:
            assert step.reset is not None and list(step.reset) == [0, 1, 2]
            steps_since_reset = np.zeros(3, dtype=np.int64)
            slot_sessions = step.sessions.copy()
        if step.keep is not None:
            steps_since_reset, slot_sessions = steps_since_reset[step.keep], slot_sessions[step.keep]
        if step.reset is not None:
            steps_since_reset[step.reset] = 0
            slot_sessions[step.reset] = step.sessions[step.reset]
        changed = slot_sessions != step.sessions
        assert not changed.any(), "a slot changed session without a reset"
        # the hidden state was reset exactly when the session began: its age is the event's position
        assert np.array_equal(steps_since_reset, step.positions)
        for session, position, item, target in zip(
            step.sessions, step.positions, step.inputs, step.targets, strict=True
        ):
            assert sessions[session][position] == item and sessions[session][position + 1] == target
            seen[(int(session), int(position), int(target))] += 1
        steps_since_reset = steps_since_reset + 1
    expected = {(s, p, items[p + 1]) for s, items in enumerate(sessions) for p in range(len(items) - 1)}
    assert set(seen) == expected
    assert all(count == 1 for count in seen.values())
    assert arrays.n_transitions == len(expected)


def test_batches_take_sessions_in_start_time_order_and_shrink_at_the_end() -> None:
    arrays = arrays_of([[1, 2], [3, 4, 5, 6], [6, 7]], starts=[5, 1, 3])
    steps = list(session_parallel_steps(arrays, batch_size=2))
    assert list(steps[0].sessions) == [1, 2]  # the two earliest sessions start
    assert list(steps[1].sessions) == [1, 0] and list(steps[1].reset) == [1]
    assert list(steps[2].keep) == [0] and list(steps[2].sessions) == [1]
    assert steps[2].reset is None and len(steps) == 3
    assert sum(len(step.targets) for step in steps) == arrays.n_transitions == 5


def test_negative_sampler_follows_popularity_power() -> None:
    popularity = np.array([1.0, 4.0, 0.0, 16.0])
    sampler = NegativeSampler(popularity, alpha=0.5, n_sample=1000, rng=np.random.default_rng(0), block=20_000)
    drawn = np.concatenate([sampler.draw() for _ in range(60)])  # crosses a block refill
    shares = np.bincount(drawn, minlength=4) / len(drawn)
    assert shares[2] == 0.0
    assert shares == pytest.approx([1 / 7, 2 / 7, 0.0, 4 / 7], abs=0.01)


# --- losses and optimiser ----------------------------------------------------------------------------------
def naive_losses(scores: torch.Tensor, elu_param: float, bpreg: float) -> tuple[float, float]:
    """The losses over repeated columns as written in the papers: row i's positive is column i."""
    n = scores.shape[0]
    xe = -sum(math.log(torch.softmax(scores[i], 0)[i].item()) for i in range(n))
    activated = torch.nn.functional.elu(scores, elu_param)
    bpr = 0.0
    for i in range(n):
        negatives = [j for j in range(scores.shape[1]) if j != i]
        r = activated[i, negatives]
        weights = torch.softmax(r, 0)
        ranking = (weights * torch.sigmoid(activated[i, i] - r)).sum().item()
        bpr += -math.log(ranking) + bpreg * (weights * r**2).sum().item()
    return xe, bpr


def test_losses_over_distinct_items_equal_the_losses_over_repeated_columns() -> None:
    torch.manual_seed(0)
    scored = torch.tensor([2, 0, 2, 5, 0, 0, 7, 2, 5])  # 3 targets, then 6 samples; repeats on purpose
    items, columns = torch.unique(scored, return_inverse=True)
    item_scores = torch.randn(3, len(items))
    repeated = item_scores[:, columns]
    counts = torch.bincount(columns, minlength=len(items)).float()
    xe, bpr = naive_losses(repeated, elu_param=0.5, bpreg=1.5)
    got_xe = sampled_cross_entropy(item_scores, columns[:3], counts.log(), None)
    got_bpr = bpr_max(item_scores, columns[:3], counts, elu_param=0.5, bpreg=1.5)
    assert got_xe.item() == pytest.approx(xe, rel=1e-5)
    assert got_bpr.item() == pytest.approx(bpr, rel=1e-5)


def test_bpr_max_on_a_hand_computed_case() -> None:
    # two rows, two distinct items, no repeats: each row's single negative has weight 1
    scores = torch.tensor([[2.0, 1.0], [0.5, 3.0]])
    loss = bpr_max(scores, torch.tensor([0, 1]), torch.ones(2), elu_param=0.0, bpreg=0.5)
    expected = (-math.log(1 / (1 + math.exp(-1.0))) + 0.5 * 1.0) + (-math.log(1 / (1 + math.exp(-2.5))) + 0.5 * 0.25)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_adagrad_momentum_updates_only_the_used_rows() -> None:
    network = Gru4recNetwork(6, hidden_size=2, seed=0)
    optimizer = AdagradMomentum(network, lr=0.1, momentum=0.5)
    before = network.item_weight.detach().clone()
    items = torch.tensor([1, 4])
    for _ in range(2):
        rows = network.gather_rows("item_weight", items)
        (rows * torch.tensor([[1.0, 2.0], [3.0, -1.0]])).sum().backward()
        assert rows.grad is not None
        optimizer.step_rows("item_weight", items, rows.grad)
    after = network.item_weight.detach()
    untouched = [0, 2, 3, 5]
    assert torch.equal(after[untouched], before[untouched])
    # two steps of the same gradient g: v1 = -lr g/|g|, v2 = 0.5 v1 - lr g/(sqrt 2 |g|)
    g = torch.tensor([[1.0, 2.0], [3.0, -1.0]])
    v1 = -0.1 * g / torch.sqrt(g**2 + 1e-6)
    v2 = 0.5 * v1 - 0.1 * g / torch.sqrt(2 * g**2 + 1e-6)
    assert torch.allclose(after[[1, 4]], before[[1, 4]] + v1 + v2, atol=1e-6)


# --- learning ---------------------------------------------------------------------------------------------
def test_gru4rec_learns_sequences_that_need_the_hidden_state(pattern_model: Gru4recModel) -> None:
    test = pd.DataFrame(
        [(s, item, k) for s, items in enumerate(pattern_sessions(copies=1)) for k, item in enumerate(items)],
        columns=["SessionId", "ItemId", "Time"],
    )
    ranks = pattern_model.rank_next_items(test)
    assert len(ranks) == 12
    assert (ranks == 1).mean() == 1.0  # after "m" the next item depends on the item before it


def test_cross_entropy_with_one_hot_input_learns_a_cycle() -> None:
    n = 12
    sessions = [[str((start + k) % n) for k in range(5)] for start in range(n) for _ in range(4)]
    test = pd.DataFrame(
        [(s, item, k) for s, items in enumerate(sessions[::4]) for k, item in enumerate(items)],
        columns=["SessionId", "ItemId", "Time"],
    )
    model = Gru4recModel()
    params = dict(SMALL, num_epochs=10, loss="cross-entropy", learning_rate=0.2, n_sample=12, sample_alpha=0.0)
    params.update(constrained_embedding=False, embedding_size=0, logq=0.5)
    model.fit(TrainingData(events=events_of(sessions), hyperparameters=params, seed=1))
    ranks = model.rank_next_items(test)
    assert (ranks <= 2).mean() >= 0.95


def test_fit_is_reproducible_under_a_seed() -> None:
    events = events_of(pattern_sessions(copies=5))
    params = dict(SMALL, dropout_p_embed=0.3, dropout_p_hidden=0.2, num_epochs=2)
    states = []
    for seed in (7, 7, 8):
        model = Gru4recModel()
        model.fit(TrainingData(events=events, hyperparameters=params, seed=seed))
        assert model.network is not None
        states.append({k: v.clone() for k, v in model.network.state_dict().items()})
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert not all(torch.equal(states[0][k], states[2][k]) for k in states[0])


def test_fit_report_and_input_modes() -> None:
    events = events_of(pattern_sessions(copies=3))
    for extra in (
        {"constrained_embedding": False, "embedding_size": 0},
        {"embeddingSize": 8},  # a separate embedding whatever constrained_embedding says
    ):
        model = Gru4recModel()
        report = model.fit(TrainingData(events=events, hyperparameters={**SMALL, **extra}, seed=0))
        assert report.n_items == 13 and report.n_events == len(events)
        assert model.network is not None and model.network.constrained_embedding is False
        assert math.isfinite(report.metrics["train_loss"]) and report.metrics["events_per_second"] > 0
        # the NumPy serving path computes what the network computes
        items = np.array([3, 0, 7, 7, 2])
        expected = model.network.session_state(torch.from_numpy(items))
        assert model._scorer is not None
        np.testing.assert_allclose(model._scorer.session_state(items), expected.numpy(), rtol=1e-5, atol=1e-6)
    assert model.network.input_embedding is not None and model.network.input_embedding.shape == (13, 8)


def test_fit_without_sessions_of_two_views_is_refused() -> None:
    events = events_of([["a"], ["b"]]).assign(event="view")
    with pytest.raises(ValueError, match="two or more"):
        Gru4recModel().fit(TrainingData(events=events, hyperparameters=SMALL))
    with pytest.raises(ValueError):
        Gru4recModel().fit(TrainingData(events=events_of([["a", "b"]], event="order"), hyperparameters=SMALL))


# --- hyper-parameters -------------------------------------------------------------------------------------
def test_parameter_grid_reads_config_options_and_scalars() -> None:
    grid = parameter_grid(
        {
            "numEpochsOptions": [3, 5],
            "batch_size_options": [32.0],
            "hidden_size": 64,
            "loss": "cross-entropy",
            "incremental_trainings": 10,
            "n_sample": 100,
        }
    )
    assert [p.num_epochs for p in grid] == [3, 5]
    assert all(p.batch_size == 32 and p.hidden_size == 64 and p.loss == "cross-entropy" for p in grid)
    assert grid[0].n_sample == 100 and grid[0].momentum == Gru4recParams().momentum
    with pytest.raises(ValueError):
        parameter_grid({"loss": "top1"})


def test_parameter_grid_reads_the_trainers_config_section() -> None:
    config = Gru4recConfig(hidden_size_options=[32, 48], loss="bpr-max", sample_alpha=0.3)
    hyperparameters = {"event_weights": {"view": 1.0}, "gru4rec_config": config.model_dump(), "num_threads": 1}
    grid = parameter_grid(hyperparameters)
    assert [p.hidden_size for p in grid] == [32, 48]
    assert all(p.loss == "bpr-max" and p.sample_alpha == 0.3 and p.num_threads == 1 for p in grid)
    assert all(p.batch_size == config.batch_size_options[0] for p in grid)
    assert parameter_grid({"gru4rec_config": config})[0].hidden_size == 32


def test_grid_search_reports_validation_recall_and_keeps_a_candidate() -> None:
    model = Gru4recModel()
    params = dict(SMALL, learning_rate_options=[0.2, 1e-6], num_epochs=3)
    report = model.fit(TrainingData(events=events_of(pattern_sessions(copies=6)), hyperparameters=params, seed=0))
    assert report.metrics["grid_0_recall@20"] >= report.metrics["grid_1_recall@20"]
    assert report.hyperparameters["learning_rate"] == 0.2
    assert report.metrics["validation_recall@20"] == report.metrics["grid_0_recall@20"]


def test_session_frame_collapses_reloads_and_keeps_the_chosen_events() -> None:
    events = events_of([["a", "a", "b", "a"], ["c", "d"]])
    events.loc[events["session_id"] == "1", "event"] = "cart"
    frame = session_frame(events, ("view",))
    assert list(frame["sku"]) == ["a", "b", "a"]
    assert list(session_frame(events, ("view", "cart"))["sku"]) == ["a", "b", "a", "c", "d"]


# --- serving ----------------------------------------------------------------------------------------------
def test_readiness_needs_a_known_session_item(pattern_model: Gru4recModel) -> None:
    catalog = catalog_of(["a", "b", "zz"])
    assert not Gru4recModel().is_ready(context("a"), catalog)
    assert not pattern_model.is_ready(context(), catalog)
    assert not pattern_model.is_ready(context("zz", "unknown"), catalog)
    assert pattern_model.is_ready(context("zz", "a"), catalog)
    with pytest.raises(ModelNotFittedError):
        Gru4recModel().score(context("a"), catalog, np.arange(3))


def test_scores_rank_the_learnt_next_item_first_and_unknown_items_are_nan(pattern_model: Gru4recModel) -> None:
    skus = ["zz", "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m"]
    catalog = catalog_of(skus)
    candidates = np.arange(len(skus))
    scores = pattern_model.score(context("d", "unknown", "m"), catalog, candidates)
    assert np.isnan(scores[0]) and np.isfinite(scores[1:]).all()
    assert skus[int(np.nanargmax(scores))] == "e"
    scores = pattern_model.score(context("g", "m"), catalog, candidates)
    assert skus[int(np.nanargmax(scores))] == "h"
    assert np.isnan(pattern_model.score(context("unknown"), catalog, candidates)).all()
    subset = pattern_model.score(context("g", "m"), catalog, np.array([8, 0, 13]))
    assert subset[0] == scores[8] and np.isnan(subset[1]) and subset[2] == scores[13]


def test_catalog_mapping_follows_the_catalog_revision(pattern_model: Gru4recModel) -> None:
    first = catalog_of(["e", "h", "b"], revision=1)
    second = catalog_of(["h", "b", "e", "new"], revision=2)
    ctx = context("d", "m")
    one = pattern_model.score(ctx, first, np.arange(3))
    two = pattern_model.score(ctx, second, np.arange(4))
    assert two[0] == one[1] and two[1] == one[2] and two[2] == one[0] and np.isnan(two[3])


def test_serving_scores_agree_with_the_batched_next_item_ranks(pattern_model: Gru4recModel) -> None:
    skus = list(pattern_model.items)
    catalog = catalog_of(skus)
    session = ["j", "k", "l", "a"]
    test = pd.DataFrame({"SessionId": 0, "ItemId": session, "Time": range(4)})
    ranks = pattern_model.rank_next_items(test)
    for k in range(3):
        scores = pattern_model.score(context(*session[: k + 1]), catalog, np.arange(len(skus)))
        target = scores[skus.index(session[k + 1])]
        assert ranks[k] == int((scores >= target - 1e-5).sum())


def test_save_and_load_round_trip_gives_identical_scores(pattern_model: Gru4recModel, tmp_path: Path) -> None:
    pattern_model.save(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == set(Gru4recModel.artefact_files)
    loaded = Gru4recModel.load(tmp_path, "v1")
    assert loaded.identifier == "gru4rec_v1"
    assert loaded.network is not None and not loaded.network.training
    catalog = catalog_of(list(pattern_model.items) + ["zz"])
    candidates = np.arange(len(catalog))
    for ctx in (context("a", "m"), context("j", "k", "l")):
        np.testing.assert_array_equal(
            pattern_model.score(ctx, catalog, candidates), loaded.score(ctx, catalog, candidates)
        )
    assert loaded.params == pattern_model.params
    with pytest.raises(ModelNotFittedError):
        Gru4recModel().save(tmp_path)


# --- protocol B -------------------------------------------------------------------------------------------
def test_protocol_b_preparation_and_split(tmp_path: Path) -> None:
    day = pd.Timestamp("2011-01-01")
    rows = []

    def invoice(customer: float, when: pd.Timestamp, items: list[str], country: str = "UK") -> None:
        rows.extend((item, 1, when, 1.0, customer, country) for item in items)

    common = ["p", "q", "r", "s"]
    for k in range(6):  # train invoices, one item repeated within an invoice
        invoice(float(k), day + pd.Timedelta(days=k), [*common, "p"])
    invoice(np.nan, day + pd.Timedelta(days=1), ["p", "q", "POSTAGE"])  # guest; POSTAGE dropped
    invoice(np.nan, day + pd.Timedelta(days=1), ["r", "s"], country="FR")  # same time, other country
    invoice(1.0, day + pd.Timedelta(days=2), ["rare", "p"])  # "rare" < 5 events, session then too short
    invoice(2.0, day + pd.Timedelta(days=60), ["q", "p", "new", "r"])  # test; "new" unseen in train
    invoice(3.0, day + pd.Timedelta(days=61), ["s", "new"])  # test; a single known item -> dropped
    invoice(4.0, day + pd.Timedelta(days=62), ["p", "q"])
    for k in range(5):
        invoice(9.0, day + pd.Timedelta(days=62, hours=k + 1), ["new"])  # "new" has 5 events but never 2 a session
    raw = pd.DataFrame(rows, columns=["Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID", "Country"])
    for item in ("p", "q"):  # a cancelled invoice: would be a ninth train session
        raw.loc[len(raw)] = [item, -2, day + pd.Timedelta(days=10), 1.0, 7.0, "UK"]
    path = tmp_path / "retail.parquet"
    raw.to_parquet(path)

    sessions = protocol.load_sessions(path)
    assert "POSTAGE" not in set(sessions["ItemId"]) and "rare" not in set(sessions["ItemId"])
    assert not sessions.duplicated(["SessionId", "ItemId"]).any()
    assert sessions.groupby("SessionId").size().min() >= 2
    split = protocol.split_sessions(sessions)
    assert split.stats["train_sessions"] == 8
    assert split.stats["test_sessions"] == 2 and split.stats["queries"] == 3
    first_test = split.test.groupby("SessionId")["ItemId"].apply(list).tolist()
    assert ["q", "p", "r"] in first_test and ["p", "q"] in first_test
    current, nxt = protocol.next_item_queries(split.test)
    assert len(current) == 3
    ranks = protocol.popularity_ranks(split)
    assert len(ranks) == 3 and (ranks >= 1).all()


def test_conservative_ranks_count_ties_as_ahead() -> None:
    scores = np.array([[0.5, 0.5, 0.1, 0.5], [0.9, 0.2, 0.2, 0.1]])
    assert list(protocol.conservative_ranks(scores, np.array([1, 0]))) == [3, 1]
    figures = protocol.summarise(np.array([1, 4, 25]), cutoff=20)
    assert figures["recall@20"] == pytest.approx(2 / 3) and figures["mrr@20"] == pytest.approx((1 + 0.25) / 3)


def test_bpr_max_gradient_matches_finite_differences() -> None:
    torch.manual_seed(1)
    scores = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    positives = torch.tensor([0, 2, 2, 5])
    counts = torch.tensor([1.0, 3.0, 2.0, 1.0, 1.0, 2.0], dtype=torch.float64)
    for elu_param, bpreg in ((0.5, 1.95), (0.0, 0.3)):

        def loss(x: torch.Tensor, elu_param: float = elu_param, bpreg: float = bpreg) -> torch.Tensor:
            return bpr_max(x, positives, counts, elu_param, bpreg)

        assert torch.autograd.gradcheck(loss, (scores,))


def test_fewer_sessions_than_the_batch_size_still_train_and_rank() -> None:
    model = Gru4recModel()
    params = dict(SMALL, batch_size=50)
    model.fit(TrainingData(events=events_of([["a", "b", "c"], ["b", "c"], ["x"]]), hyperparameters=params))
    assert list(model.items) == ["a", "b", "c", "x"]
    test = pd.DataFrame({"SessionId": [0, 0, 1], "ItemId": ["a", "b", "x"], "Time": [0, 1, 2]})
    ranks = model.rank_next_items(test)
    assert len(ranks) == 1 and 1 <= ranks[0] <= 4


def test_training_loop_starts_every_session_from_a_zero_hidden_state() -> None:
    class Recording(Gru4recNetwork):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            self.hidden_seen: list[torch.Tensor] = []

        def step_embedded(self, embedded: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
            self.hidden_seen.append(hidden.detach().clone())
            return super().step_embedded(embedded, hidden)

    sessions = [[0, 1, 2], [3, 4], [5, 6, 7, 8], [1, 3], [2, 4, 6], [8, 7]]
    arrays = arrays_of(sessions, starts=[3, 0, 1, 5, 2, 4])
    network = Recording(9, hidden_size=4, seed=0)
    params = Gru4recParams(num_epochs=1, batch_size=3, hidden_size=4, n_sample=4, dropout_p_hidden=0.0)
    train_network(network, arrays, np.ones(9), params, seed=0)
    steps = list(session_parallel_steps(arrays, batch_size=3))
    assert len(network.hidden_seen) == len(steps)
    for step, hidden in zip(steps, network.hidden_seen, strict=True):
        starting = step.positions == 0
        assert hidden.shape[0] == len(step.inputs)
        assert torch.all(hidden[torch.from_numpy(starting)] == 0)
        assert torch.all(hidden[torch.from_numpy(~starting)].abs().sum(dim=1) > 0)


def test_thread_schedule_keeps_the_faster_count_and_backs_off_when_steps_slow_down() -> None:
    applied: list[int] = []
    schedule = ThreadSchedule(2, set_threads=applied.append, probe_steps=3, window=4, slowdown=3.0)
    schedule.start_epoch()
    timings = {1: 0.010, 2: 0.006}
    for _ in range(6):  # the probe: three steps with one thread, three with two
        schedule.record(timings[schedule.next_step()])
    assert applied == [1, 2] and schedule.next_step() == 2  # two threads were faster
    for _ in range(4):
        schedule.record(0.007)
    assert schedule.next_step() == 2  # a little slower than the probe: kept
    for _ in range(4):
        schedule.record(0.050)  # another process took a core: spinning threads
    assert schedule.next_step() == 1 and applied == [1, 2, 1]
    for _ in range(10):
        schedule.record(0.011)
    assert schedule.next_step() == 1
    schedule.start_epoch()  # probed again at the next epoch
    timings = {1: 0.010, 2: 0.040}
    for _ in range(6):
        schedule.record(timings[schedule.next_step()])
    assert schedule.next_step() == 1
    assert schedule.steps_by_threads[2] == 3 + 4 + 4 + 3
    assert ThreadSchedule(1, set_threads=applied.append).maximum == 1
