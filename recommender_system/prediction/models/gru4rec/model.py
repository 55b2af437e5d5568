"""GRU4Rec as a prediction model: fitting on the shoppers' view sessions and scoring candidates for a live session.

Training follows Hidasi et al. (arXiv 1511.06939, 1706.03847) and Hidasi & Czapp (arXiv 2307.14956):
session-parallel mini-batches (sessions in start-time order, hidden state carried within a session and reset when
a new session takes a slot), one GRU step per mini-batch with the hidden state detached in between, the mini-batch
targets plus ``n_sample`` negatives drawn with probability ``popularity ** sample_alpha`` and shared by the whole
mini-batch as the scored items, cross-entropy over a softmax or BPR-max with score regularisation, Adagrad with
momentum updating only the item rows a step touched, and dropout on the input embedding and the hidden state.

Hyper-parameters (``TrainingData.hyperparameters``; snake_case or camelCase; a ``*_options`` list of
``Gru4recConfig`` gives the candidate values of that key; with more than one candidate anywhere, a grid search on a
time split of the training sessions picks the combination with the best Recall@20, then the model is refitted on
all sessions):

=====================  ========  ====================================================================
key                    default   meaning
=====================  ========  ====================================================================
num_epochs             10        passes over the training sessions
batch_size             80        sessions in parallel per mini-batch
hidden_size            224       GRU units
embedding_size         0         > 0: a separate input embedding of this size; 0: see ``constrained_embedding``
constrained_embedding  true      with embedding size 0: the input embedding of an item is its output embedding
                                 (the authors' best); false: one-hot input
learning_rate          0.05      Adagrad learning rate
momentum               0.4       momentum of the Adagrad update
loss                   bpr-max   ``bpr-max`` or ``cross-entropy``
n_sample               2048      shared negative samples per mini-batch
sample_alpha           0.4       exponent of popularity in the sampling distribution
bpreg                  1.95      BPR-max score regularisation
elu_param              0.5       ELU final activation of BPR-max (0 = linear)
logq                   0.0       cross-entropy: weight of the log-Q sampling correction
dropout_p_embed        0.5       dropout on the input embedding
dropout_p_hidden       0.05      dropout on the hidden state
event_types            [view]    events that form the sessions (e.g. ``["view", "cart"]``)
num_threads            0         torch threads while fitting, restored afterwards; 0: 1 or 2, timed (see below)
validation_share       0.1       grid search: share of the latest sessions held out
max_grid_points        8         grid search: at most this many combinations are tried
max_session_length     50        serving: only the latest this many session items are read
=====================  ========  ====================================================================

The defaults are the authors' best RetailRocket setting (an e-commerce view data set). Threads: on a 2-core
machine two threads train faster while the machine is idle, but many times slower as soon as another process
competes for the cores (OpenMP threads spin while waiting for each other); with ``num_threads`` 0 each epoch
times both and keeps the faster (``training.ThreadSchedule``). Set it to 1 or 2 for bit-for-bit reproducible fits.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import torch

from recommender_system.domain import CatalogSnapshot, RecommendationContext
from recommender_system.prediction.models.base import (
    FitReport,
    ModelNotFittedError,
    PredictionModel,
    TrainingData,
)
from recommender_system.prediction.models.gru4rec.batches import SessionArrays, session_parallel_steps
from recommender_system.prediction.models.gru4rec.network import Gru4recNetwork, SessionScorer
from recommender_system.prediction.models.gru4rec.training import Gru4recParams, parameter_grid, train_network

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "gru4rec.pt"
META_FILE = "gru4rec.json"
CUTOFF = 20


@dataclass
class _Sessions:
    """Training sessions as item indices, with the item list and counts."""

    items: np.ndarray  # SKU strings, index -> SKU
    arrays: SessionArrays
    popularity: np.ndarray
    frame: pd.DataFrame = field(repr=False)  # session, item, time (item as index)


def _time_key(values: pd.Series) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(values):
        return values.to_numpy(dtype=np.float64)
    stamps = pd.to_datetime(values, utc=True)
    return ((stamps - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(microseconds=1)).to_numpy(dtype=np.float64)


def session_frame(events: pd.DataFrame, event_types: Sequence[str]) -> pd.DataFrame:
    """The events that form sessions: columns ``session``, ``sku``, ``time``, stably sorted by session and time,
    with immediate repeats of the same item (page reloads) collapsed."""
    if events.empty or not {"session_id", "sku", "event", "timestamp"} <= set(events.columns):
        return pd.DataFrame({"session": [], "sku": [], "time": []})
    rows = events[events["event"].isin(list(event_types)) & events["session_id"].notna() & events["sku"].notna()]
    frame = pd.DataFrame(
        {
            "session": rows["session_id"].astype(str).to_numpy(),
            "sku": rows["sku"].astype(str).to_numpy(),
            "time": _time_key(rows["timestamp"]),
        }
    )
    frame = frame.sort_values(["session", "time"], kind="stable").reset_index(drop=True)
    session, sku = frame["session"].to_numpy(), frame["sku"].to_numpy()
    repeat = np.zeros(len(frame), dtype=bool)
    repeat[1:] = (session[1:] == session[:-1]) & (sku[1:] == sku[:-1])
    return frame[~repeat].reset_index(drop=True)


def _index_sessions(frame: pd.DataFrame, items: np.ndarray | None = None) -> _Sessions:
    """Map SKUs to item indices (a new sorted item list unless ``items`` is given; unknown SKUs are dropped)."""
    if items is None:
        items = np.unique(frame["sku"].to_numpy().astype(str))
    position = pd.Index(items).get_indexer(frame["sku"].to_numpy())
    known = frame[position >= 0].assign(item=position[position >= 0])
    arrays = SessionArrays.from_frame(known, session="session", item="item", time="time")
    popularity = np.bincount(known["item"].to_numpy(), minlength=len(items)).astype(np.float64)
    return _Sessions(items=items, arrays=arrays, popularity=popularity, frame=known)


@contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    """Run with this many torch threads, then restore the process's setting."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class Gru4recModel(PredictionModel):
    """Session-based recommendations from a GRU over the live session's viewed items."""

    name: ClassVar[str] = "gru4rec"
    artefact_files: ClassVar[tuple[str, ...]] = (WEIGHTS_FILE, META_FILE)

    def __init__(self, version: str | None = None) -> None:
        super().__init__(version)
        self.network: Gru4recNetwork | None = None
        self.params = Gru4recParams()
        self.items: np.ndarray = np.array([], dtype=object)
        self.item_index: dict[str, int] = {}
        self.training_stats: dict[str, float] = {}
        self._catalog_map: tuple[int, np.ndarray] | None = None
        self._scorer: SessionScorer | None = None

    # --- training ---------------------------------------------------------------------------------------
    def fit(self, data: TrainingData) -> FitReport:
        grid = parameter_grid(data.hyperparameters) or [Gru4recParams()]
        frames = {params.event_types: session_frame(data.events, params.event_types) for params in grid}
        chosen = grid[0]
        if len(grid) > 1:
            chosen, metrics = self._grid_search(frames, grid, data.seed)
        else:
            metrics = {}
        frame = frames[chosen.event_types]
        sessions = _index_sessions(frame)
        if sessions.arrays.n_transitions == 0:
            raise ValueError("GRU4Rec needs at least one session with two or more items to train")
        self._train(sessions, chosen, data.seed)
        metrics.update(self.training_stats)
        users = frame["session"].nunique()
        if "user_key" in data.events.columns:
            in_sessions = data.events["session_id"].astype(str).isin(set(frame["session"]))
            users = data.events.loc[in_sessions, "user_key"].nunique()
        return FitReport(
            hyperparameters=chosen.to_json(),
            metrics=metrics,
            n_items=len(self.items),
            n_users=int(users),
            n_events=len(frame),
        )

    def _grid_search(
        self, frames: dict[tuple[str, ...], pd.DataFrame], grid: list[Gru4recParams], seed: int
    ) -> tuple[Gru4recParams, dict[str, float]]:
        """Fit each combination on the earlier sessions and rank the next items of the latest ones (the sessions
        of the first combination's event types, a ``validation_share`` of them by start time)."""
        limit = grid[0].max_grid_points
        if len(grid) > limit:
            logger.warning("gru4rec: %d grid points, trying the first %d", len(grid), limit)
            grid = grid[:limit]
        validation_frame = frames[grid[0].event_types]
        starts = validation_frame.groupby("session")["time"].min()
        cut = float(np.quantile(starts.to_numpy(), 1.0 - grid[0].validation_share))
        late = validation_frame[validation_frame["session"].map(starts).to_numpy() >= cut]
        late = late.rename(columns={"sku": "item"})
        best: tuple[float, int] | None = None
        results: dict[str, float] = {}
        for number, params in enumerate(grid):
            frame = frames[params.event_types]
            early = frame[frame["session"].map(frame.groupby("session")["time"].min()).to_numpy() < cut]
            train = _index_sessions(early)
            if train.arrays.n_transitions == 0:
                raise ValueError("GRU4Rec grid search: no training session before the validation cut")
            trial = Gru4recModel()
            trial._train(train, params, seed)
            ranks = trial.rank_next_items(late, "session", "item", "time")
            recall = float((ranks <= CUTOFF).mean()) if len(ranks) else 0.0
            results[f"grid_{number}_recall@{CUTOFF}"] = recall
            logger.info("gru4rec grid point %d %s: validation Recall@%d %.4f", number, params, CUTOFF, recall)
            if best is None or recall > best[0]:
                best = (recall, number)
        assert best is not None
        results[f"validation_recall@{CUTOFF}"] = best[0]
        return grid[best[1]], results

    def _train(self, sessions: _Sessions, params: Gru4recParams, seed: int) -> None:
        with _torch_threads(params.num_threads or 1), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            network = Gru4recNetwork(len(sessions.items), seed=seed, **params.network_kwargs)
            stats = train_network(network, sessions.arrays, sessions.popularity, params, seed)
        self._install(network, sessions.items, params)
        self.training_stats = stats

    def _install(self, network: Gru4recNetwork, items: np.ndarray, params: Gru4recParams) -> None:
        network.eval()
        self.network = network
        self.params = params
        self.items = np.asarray(items, dtype=object)
        self.item_index = {str(sku): i for i, sku in enumerate(self.items)}
        self._scorer = SessionScorer(network)
        self._catalog_map = None

    # --- serving ----------------------------------------------------------------------------------------
    def _session_items(self, ctx: RecommendationContext) -> list[int]:
        get = self.item_index.get
        known = [i for i in (get(str(sku), -1) for sku in ctx.history.session_visited) if i >= 0]
        collapsed = [item for n, item in enumerate(known) if n == 0 or item != known[n - 1]]
        return collapsed[-self.params.max_session_length :]

    def is_ready(self, ctx: RecommendationContext, catalog: CatalogSnapshot) -> bool:
        if self.network is None:
            return False
        get = self.item_index.get
        return any(get(str(sku)) is not None for sku in ctx.history.session_visited)

    def _catalog_items(self, catalog: CatalogSnapshot) -> np.ndarray:
        """Model item index of every catalogue index (-1 when unknown), cached per catalogue revision."""
        cached = self._catalog_map
        if cached is not None and cached[0] == catalog.revision and len(cached[1]) == len(catalog):
            return cached[1]
        mapping = np.full(len(catalog), -1, dtype=np.int64)
        lookup = catalog.sku_index
        for item, sku in enumerate(self.items):
            index = lookup.get(sku)
            if index is not None:
                mapping[index] = item
        self._catalog_map = (catalog.revision, mapping)
        return mapping

    def score(self, ctx: RecommendationContext, catalog: CatalogSnapshot, candidates: np.ndarray) -> np.ndarray:
        self._require_network()
        candidates = np.asarray(candidates, dtype=np.int64)
        scores = np.full(len(candidates), np.nan, dtype=np.float64)
        sequence = self._session_items(ctx)
        if not sequence or len(candidates) == 0:
            return scores
        items = self._catalog_items(catalog)
        inside = (candidates >= 0) & (candidates < len(items))
        candidate_items = np.full(len(candidates), -1, dtype=np.int64)
        candidate_items[inside] = items[candidates[inside]]
        known = candidate_items >= 0
        if not known.any():
            return scores
        scorer = self._scorer
        assert scorer is not None
        hidden = scorer.session_state(np.asarray(sequence, dtype=np.int64))
        scores[known] = scorer.scores(hidden, candidate_items[known])
        return scores

    @torch.no_grad()
    def rank_next_items(
        self,
        frame: pd.DataFrame,
        session: str = "SessionId",
        item: str = "ItemId",
        time: str = "Time",
        batch_size: int = 512,
    ) -> np.ndarray:
        """Rank (1 = best, conservative ties) of every next item among all items, given the session so far.

        ``frame`` holds the test events; items unknown to the model are dropped first. Sessions run in parallel
        mini-batches as in training, so evaluating tens of thousands of queries takes seconds.
        """
        network = self._require_network()
        with _torch_threads(self.params.num_threads or 1):
            return self._rank_next_items(network, frame, session, item, time, batch_size)

    def _rank_next_items(
        self, network: Gru4recNetwork, frame: pd.DataFrame, session: str, item: str, time: str, batch_size: int
    ) -> np.ndarray:
        events = pd.DataFrame(
            {"session": frame[session].to_numpy(), "sku": frame[item].astype(str).to_numpy(), "time": frame[time]}
        )
        events["time"] = _time_key(events["time"])
        arrays = _index_sessions(events, self.items).arrays
        ranks = np.empty(arrays.n_transitions, dtype=np.int64)
        filled = 0
        # at most some 16 million scores at a time
        batch_size = max(1, min(batch_size, 16_000_000 // len(self.items)))
        hidden = network.init_hidden(arrays.first_batch_size(batch_size))
        for step in session_parallel_steps(arrays, batch_size):
            if step.keep is not None:
                hidden = hidden[torch.from_numpy(step.keep)]
            if step.reset is not None:
                hidden[torch.from_numpy(step.reset)] = 0.0
            hidden = network.step(torch.from_numpy(step.inputs), hidden)
            scores = network.score_all(hidden)
            targets = torch.from_numpy(step.targets)
            target_scores = scores.gather(1, targets[:, None])
            step_ranks = (scores >= target_scores).sum(dim=1)
            ranks[filled : filled + len(step_ranks)] = step_ranks.numpy()
            filled += len(step_ranks)
        return ranks[:filled]

    def _require_network(self) -> Gru4recNetwork:
        if self.network is None:
            raise ModelNotFittedError("gru4rec is not fitted")
        return self.network

    # --- artefact ---------------------------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        network = self._require_network()
        directory = Path(directory)
        torch.save(network.state_dict(), directory / WEIGHTS_FILE)
        meta = {
            "items": [str(sku) for sku in self.items],
            "params": self.params.to_json(),
            "training_stats": self.training_stats,
        }
        (directory / META_FILE).write_text(json.dumps(meta), encoding="utf-8")

    @classmethod
    def load(cls, directory: Path, version: str) -> Gru4recModel:
        directory = Path(directory)
        meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
        params = Gru4recParams.from_json(meta["params"])
        items = np.array(meta["items"], dtype=object)
        network = Gru4recNetwork(len(items), **params.network_kwargs)
        state = torch.load(directory / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        network.load_state_dict(state)
        model = cls(version)
        model._install(network, items, params)
        model.training_stats = {k: float(v) for k, v in meta.get("training_stats", {}).items()}
        return model
