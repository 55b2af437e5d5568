"""Fitting the GRU4Rec network: hyper-parameters, the sampled losses, Adagrad with momentum and the loop.

One training step (Hidasi et al. 2016 and 2018; Hidasi & Czapp 2023): the session-parallel mini-batch's input
items go through one GRU step (the hidden state is detached between steps); the scored items are the mini-batch's
targets followed by ``n_sample`` negatives drawn with probability ``popularity ** sample_alpha`` and shared by the
whole mini-batch; row ``i``'s positive is its own target and every other scored item is a negative.

The scored items repeat (popular items are drawn many times): the step scores each distinct item once and gives
it its multiplicity as a weight, which gives exactly the loss of the repeated columns at a fraction of the cost.
Only the rows of the item tables that the step used are read and updated.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from recommender_system.prediction.config import Gru4recConfig
from recommender_system.prediction.models.gru4rec.batches import (
    NegativeSampler,
    SessionArrays,
    session_parallel_steps,
)
from recommender_system.prediction.models.gru4rec.network import Gru4recNetwork

logger = logging.getLogger(__name__)

LOSSES = ("bpr-max", "cross-entropy")
CONFIG_KEY = "gru4rec_config"


@dataclass(frozen=True)
class Gru4recParams:
    """The hyper-parameters of one fit (documented in ``model.py``)."""

    num_epochs: int = 10
    batch_size: int = 80
    hidden_size: int = 224
    embedding_size: int = 0
    constrained_embedding: bool = True
    learning_rate: float = 0.05
    momentum: float = 0.4
    loss: str = "bpr-max"
    n_sample: int = 2048
    sample_alpha: float = 0.4
    bpreg: float = 1.95
    elu_param: float = 0.5
    logq: float = 0.0
    dropout_p_embed: float = 0.5
    dropout_p_hidden: float = 0.05
    event_types: tuple[str, ...] = ("view",)
    num_threads: int = 0
    validation_share: float = 0.1
    max_grid_points: int = 8
    max_session_length: int = 50

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, not {self.loss!r}")
        for name in ("num_epochs", "batch_size", "hidden_size", "max_grid_points"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.num_threads < 0:
            raise ValueError("num_threads must be >= 0 (0: chosen while training)")
        if self.n_sample < 0 or self.embedding_size < 0 or self.max_session_length < 1:
            raise ValueError("n_sample and embedding_size must be >= 0, max_session_length >= 1")
        if self.learning_rate <= 0 or not 0 <= self.momentum < 1:
            raise ValueError("learning_rate must be > 0 and momentum in [0, 1)")
        if not (0 <= self.dropout_p_embed < 1 and 0 <= self.dropout_p_hidden < 1):
            raise ValueError("dropout probabilities must be in [0, 1)")
        if not 0 < self.validation_share < 1:
            raise ValueError("validation_share must be in (0, 1)")
        if not self.event_types:
            raise ValueError("event_types must name at least one event")

    @property
    def network_kwargs(self) -> dict[str, Any]:
        return {
            "hidden_size": self.hidden_size,
            "embedding_size": self.embedding_size,
            # a separate input embedding is asked for by its size; size 0 is the shared one, or one-hot input
            "constrained_embedding": self.constrained_embedding and self.embedding_size == 0,
            "dropout_p_embed": self.dropout_p_embed,
            "dropout_p_hidden": self.dropout_p_hidden,
        }

    def to_json(self) -> dict[str, Any]:
        body = asdict(self)
        body["event_types"] = list(self.event_types)
        return body

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Gru4recParams:
        known = {name: _coerce(name, value) for name, value in body.items() if name in _FIELDS}
        return cls(**known)


_FIELDS = {f.name for f in fields(Gru4recParams)}
_KEY_ALIASES = {"n_epochs": "num_epochs", "layers": "hidden_size", "embedding": "embedding_size"}


def _snake(key: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()


def _coerce(name: str, value: Any) -> Any:
    default = getattr(Gru4recParams, name)
    if name == "event_types":
        return tuple(str(v) for v in ([value] if isinstance(value, str) else value))
    if isinstance(default, bool):
        if isinstance(value, str):
            return value.strip().lower() in ("1", "true", "yes", "on")
        return bool(value)
    if isinstance(default, int):
        if isinstance(value, list | tuple):  # the authors' ``layers``: one GRU layer is supported
            value = value[-1]
        number = float(value)
        if not number.is_integer():
            raise ValueError(f"{name} must be an integer, not {value!r}")
        return int(number)
    if isinstance(default, float):
        return float(value)
    return str(value)


def parameter_grid(hyperparameters: Mapping[str, Any]) -> list[Gru4recParams]:
    """Every combination of the given hyper-parameters; the first one is made of every first option.

    Keys are snake_case or camelCase; ``<key>_options`` lists (``Gru4recConfig``) give candidate values and win
    over a scalar ``<key>``. The trainer's layout is accepted too: the ``Gru4recConfig`` section under
    ``gru4rec_config`` (a dict or the model instance), next to other models' keys such as ``event_weights``; keys at
    the top level win over the section's. Unknown keys (such as ``incremental_trainings``) are ignored.
    """
    values = dict(hyperparameters)
    for section_key in (CONFIG_KEY, "gru4recConfig"):
        section = values.pop(section_key, None)
        if isinstance(section, Gru4recConfig):
            section = section.model_dump()
        if isinstance(section, Mapping):
            values = {**dict(section), **values}
    candidates: dict[str, list[Any]] = {}
    for raw_key, value in values.items():
        key = _snake(str(raw_key))
        is_options = key.endswith("_options")
        name = key[: -len("_options")] if is_options else key
        name = _KEY_ALIASES.get(name, name)
        if name not in _FIELDS or value is None:
            continue
        if is_options:
            options = list(value) if isinstance(value, list | tuple) else [value]
            if options:
                candidates[name] = [_coerce(name, option) for option in options]
        elif name not in candidates:
            candidates[name] = [_coerce(name, value)]
    names = list(candidates)
    combos = itertools.product(*candidates.values())
    return [Gru4recParams(**dict(zip(names, combo, strict=True))) for combo in combos]


# --- optimiser ------------------------------------------------------------------------------------------
class AdagradMomentum:
    """Adagrad with momentum: ``acc += g^2; v = momentum * v - lr * g / sqrt(acc + eps); p += v``.

    Dense parameters are updated whole. Item tables are updated row by row (``step_rows``): only the rows a step
    used change, with their own accumulator and velocity; the other rows keep theirs for later. Accumulators start
    at ``eps`` instead of 0, which saves adding ``eps`` at every step.
    """

    def __init__(self, network: Gru4recNetwork, lr: float, momentum: float, eps: float = 1e-6) -> None:
        self.lr = lr
        self.momentum = momentum
        tables = set(network.item_table_names)
        self.dense = [
            (p, torch.full_like(p, eps), torch.zeros_like(p)) for n, p in network.named_parameters() if n not in tables
        ]
        self.tables = {name: getattr(network, name) for name in tables}
        self.accumulators = {name: torch.full_like(table, eps) for name, table in self.tables.items()}
        self.velocities = {name: torch.zeros_like(table) for name, table in self.tables.items()}

    @torch.no_grad()
    def step_dense(self) -> None:
        for param, accumulator, velocity in self.dense:
            grad = param.grad
            if grad is None:
                continue
            accumulator.addcmul_(grad, grad)
            velocity.mul_(self.momentum).addcmul_(grad, accumulator.rsqrt(), value=-self.lr)
            param.add_(velocity)
            param.grad = None

    @torch.no_grad()
    def step_rows(self, table: str, items: torch.Tensor, grad: torch.Tensor) -> None:
        """Update the rows ``items`` (distinct) of an item table with their gradient ``grad``. (Row updates are
        written as increments: ``index_add_`` is the fastest scatter.)"""
        accumulator = self.accumulators[table]
        accumulator.index_add_(0, items, grad.square())
        scale = accumulator.index_select(0, items).rsqrt_()
        velocity = self.velocities[table]
        previous = velocity.index_select(0, items)
        increment = previous.mul(self.momentum - 1.0).addcmul_(grad, scale, value=-self.lr)
        velocity.index_add_(0, items, increment)
        self.tables[table].index_add_(0, items, previous.add_(increment))


# --- losses -----------------------------------------------------------------------------------------------
def sampled_cross_entropy(
    scores: torch.Tensor, positives: torch.Tensor, log_weights: torch.Tensor, positive_shift: torch.Tensor | None
) -> torch.Tensor:
    """Sum over rows of ``-log softmax`` of the positive among all scored columns.

    ``scores`` (B x U) are the distinct scored items, ``log_weights`` (U) the log of each item's weight (its
    multiplicity among the scored columns, times the log-Q correction when used), ``positives`` (B) the column of
    each row's target and ``positive_shift`` (B) the correction of the positive's own column.
    """
    positive = scores.gather(1, positives[:, None])[:, 0]
    if positive_shift is not None:
        positive = positive + positive_shift
    return (torch.logsumexp(scores + log_weights, dim=1) - positive).sum()


class _BprMax(torch.autograd.Function):
    """BPR-max with its gradient written out: one graph node instead of some twenty element-wise ones.

    With ``a`` the activated scores, ``w`` the softmax weights of the negatives, ``s_j = sigmoid(p - a_j)``,
    ``A = sum_j w_j s_j`` and ``R = sum_j w_j a_j^2``, a row's loss ``bpreg R - log A`` has the derivatives
    ``w_j (1 - s_j^2 / A + bpreg (a_j^2 + 2 a_j - R))`` for each column and ``-(A - sum_j w_j s_j^2) / A`` more
    for the positive's column.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, scores: torch.Tensor, positives: torch.Tensor, counts: torch.Tensor, elu_param: float, bpreg: float
    ) -> torch.Tensor:
        activated = F.elu(scores, elu_param) if elu_param > 0 else scores
        rows = torch.arange(len(positives))
        logits = activated + counts.log()
        # a row's own target column counts once less as a negative (log 0 = -inf when it is only that target)
        target_counts = counts.index_select(0, positives)
        logits.index_put_((rows, positives), torch.log((target_counts - 1.0) / target_counts), accumulate=True)
        weights = torch.softmax(logits, dim=1)
        positive = activated[rows, positives][:, None]
        sigmoids = torch.sigmoid(positive - activated)
        weighted = weights * sigmoids
        ranking = weighted.sum(dim=1, keepdim=True) + 1e-24
        regularisation = (weights * activated.square()).sum(dim=1, keepdim=True)
        ctx.save_for_backward(activated, weights, sigmoids, weighted, ranking, regularisation, positives)
        ctx.elu_param, ctx.bpreg = elu_param, bpreg
        return (bpreg * regularisation - ranking.log()).sum()

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        activated, weights, sigmoids, weighted, ranking, regularisation, positives = ctx.saved_tensors
        bpreg, elu_param = ctx.bpreg, ctx.elu_param
        inverse = 1.0 / ranking
        squares = sigmoids.square()
        grad = torch.addcmul(1.0 - bpreg * regularisation, squares, inverse, value=-1.0)
        grad.addcmul_(activated, activated + 2.0, value=bpreg).mul_(weights)
        rows = torch.arange(len(positives))
        positive_grad = ((weighted * sigmoids).sum(dim=1, keepdim=True) - ranking).mul_(inverse)
        grad.index_put_((rows, positives), positive_grad[:, 0], accumulate=True)
        if elu_param > 0:
            grad = torch.ops.aten.elu_backward(grad, elu_param, 1, 1, True, activated)
        return grad.mul_(grad_output), None, None, None, None


def bpr_max(
    scores: torch.Tensor, positives: torch.Tensor, counts: torch.Tensor, elu_param: float, bpreg: float
) -> torch.Tensor:
    """Sum over rows of BPR-max with score regularisation (Hidasi & Karatzoglou 2018).

    For row ``i`` with positive score ``r_i`` the negatives are every scored column but the row's own target
    column, weighted by their softmax ``s_j``: ``-log(sum_j s_j sigmoid(r_i - r_j)) + bpreg * sum_j s_j r_j^2``.
    Scores first go through ``ELU(elu_param)`` (0 = linear). ``counts`` (U) is each distinct item's multiplicity.
    """
    loss: torch.Tensor = _BprMax.apply(scores, positives, counts, elu_param, bpreg)
    return loss


# --- the loop ----------------------------------------------------------------------------------------------
def _step_loss(
    network: Gru4recNetwork,
    optimizer: AdagradMomentum,
    params: Gru4recParams,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    hidden: torch.Tensor,
    samples: torch.Tensor | None,
    log_popularity: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward, backward and update for one mini-batch; returns the (detached) loss and new hidden state."""
    n = len(targets)
    scored = targets if samples is None else torch.cat([targets, samples])
    embedded = network.gather_rows(network.input_table, inputs)
    if network.constrained_embedding:
        items, inverse = torch.unique(torch.cat([inputs, scored]), return_inverse=True)
        input_columns, scored_columns = inverse[:n], inverse[n:]
    else:
        items, scored_columns = torch.unique(scored, return_inverse=True)
    output_rows = {name: network.gather_rows(name, items) for name in network.output_tables}
    new_hidden = network.step_embedded(embedded, hidden)
    scores = network.scores(new_hidden, output_rows["item_weight"], output_rows["item_bias"])
    positives = scored_columns[:n]
    width = len(items)
    if params.loss == "bpr-max":
        counts = torch.bincount(scored_columns, minlength=width).float()
        loss = bpr_max(scores, positives, counts, params.elu_param, params.bpreg)
    elif params.logq > 0:
        log_pop = log_popularity.index_select(0, items)
        target_counts = torch.bincount(positives, minlength=width).float()
        sample_counts = torch.bincount(scored_columns[n:], minlength=width).float()
        weights = target_counts * torch.exp(-params.logq * log_pop)
        weights += sample_counts * torch.exp(-params.logq * params.sample_alpha * log_pop)
        shift = -params.logq * log_pop.index_select(0, positives)
        loss = sampled_cross_entropy(scores, positives, weights.log(), shift)
    else:
        counts = torch.bincount(scored_columns, minlength=width).float()
        loss = sampled_cross_entropy(scores, positives, counts.log(), None)
    loss = loss / params.batch_size
    loss.backward()
    optimizer.step_dense()
    grads: dict[str, torch.Tensor] = {}
    for name, rows in output_rows.items():
        assert rows.grad is not None
        grads[name] = rows.grad
    assert embedded.grad is not None
    if network.constrained_embedding:
        grads["item_weight"].index_add_(0, input_columns, embedded.grad)
    else:
        input_items, input_columns = torch.unique(inputs, return_inverse=True)
        input_grad = embedded.new_zeros(len(input_items), embedded.shape[1]).index_add_(0, input_columns, embedded.grad)
        optimizer.step_rows(network.input_table, input_items, input_grad)
    for name, grad in grads.items():
        optimizer.step_rows(name, items, grad)
    return loss.detach(), new_hidden.detach()


class ThreadSchedule:
    """Torch threads for the training steps when ``num_threads`` is 0.

    Two threads train faster than one on an idle 2-core machine, but OpenMP threads spin while they wait for each
    other: as soon as another process takes a core, two threads run many times slower than one. So at the start of
    every epoch a few steps are timed with each thread count and the faster is kept; while two threads run, a step
    time far above the probe's sends the rest of the epoch back to one thread. (Results then depend on the thread
    counts used, by float rounding only; a fixed ``num_threads`` gives bit-for-bit reproducible fits.)
    """

    def __init__(
        self,
        maximum: int,
        set_threads: Callable[[int], None] = torch.set_num_threads,
        probe_steps: int = 12,
        window: int = 200,
        slowdown: float = 3.0,
    ) -> None:
        self.maximum = max(1, maximum)
        self.set_threads = set_threads
        self.probe_steps = probe_steps
        self.window = window
        self.slowdown = slowdown
        self.steps_by_threads: Counter[int] = Counter()
        self.threads = 0
        self._plan: list[int] = []
        self._probe: dict[int, list[float]] = {}
        self._reference = math.inf
        self._recent: list[float] = []

    def start_epoch(self) -> None:
        counts = [1, self.maximum] if self.maximum > 1 else [1]
        self._plan = [threads for threads in counts for _ in range(self.probe_steps)]
        self._probe = {threads: [] for threads in counts}
        self._recent = []

    def next_step(self) -> int:
        """The thread count for the coming step (applied)."""
        wanted = self._plan[0] if self._plan else self.threads
        if wanted != self.threads:
            self.set_threads(wanted)
            self.threads = wanted
        return wanted

    def record(self, seconds: float) -> None:
        """The wall time of the step just run."""
        self.steps_by_threads[self.threads] += 1
        if self._plan:
            self._plan.pop(0)
            self._probe[self.threads].append(seconds)
            if not self._plan:
                # the first step after a switch warms the new thread count up: leave it out
                medians = {threads: float(np.median(times[1:] or times)) for threads, times in self._probe.items()}
                fastest = min(medians, key=lambda threads: medians[threads])
                self._reference = medians[fastest]
                self._use(fastest)
            return
        if self.threads > 1:
            self._recent.append(seconds)
            if len(self._recent) >= self.window:
                if float(np.median(self._recent)) > self.slowdown * self._reference:
                    logger.info("gru4rec: steps slowed down with %d threads, going on with one", self.threads)
                    self._use(1)
                self._recent = []

    def _use(self, threads: int) -> None:
        self._plan = []
        if threads != self.threads:
            self.set_threads(threads)
            self.threads = threads

    @property
    def mean_threads(self) -> float:
        steps = sum(self.steps_by_threads.values())
        return sum(t * n for t, n in self.steps_by_threads.items()) / steps if steps else 0.0


def train_network(
    network: Gru4recNetwork, arrays: SessionArrays, popularity: np.ndarray, params: Gru4recParams, seed: int
) -> dict[str, float]:
    """Train ``network`` in place for ``params.num_epochs`` passes; returns the last epoch's loss and throughput
    figures: events (mini-batch targets) per second of wall time overall and in the fastest epoch, and per second
    of this process's CPU time (all its threads; what an otherwise idle machine would give with one thread).

    Torch's global random state (dropout) must be seeded by the caller for reproducible results.
    """
    network.train()
    optimizer = AdagradMomentum(network, params.learning_rate, params.momentum)
    sampler = None
    if params.n_sample > 0:
        rng = np.random.default_rng(seed)
        sampler = NegativeSampler(popularity, params.sample_alpha, params.n_sample, rng)
    log_popularity = torch.from_numpy(np.log(np.maximum(popularity, 1.0))).float()
    schedule = ThreadSchedule(min(2, os.cpu_count() or 1)) if params.num_threads == 0 else None
    started, cpu_started = time.perf_counter(), time.process_time()
    events = 0
    best_rate = 0.0
    loss_value = math.nan
    for epoch in range(params.num_epochs):
        epoch_started = time.perf_counter()
        hidden = network.init_hidden(arrays.first_batch_size(params.batch_size))
        total = torch.zeros(())
        epoch_events = 0
        if schedule is not None:
            schedule.start_epoch()
        for step in session_parallel_steps(arrays, params.batch_size):
            step_started = time.perf_counter()
            if schedule is not None:
                schedule.next_step()
            if step.keep is not None:
                hidden = hidden.index_select(0, torch.from_numpy(step.keep))
            if step.reset is not None:
                hidden[torch.from_numpy(step.reset)] = 0.0
            if sampler is None and len(step.targets) < 2:
                break  # without samples, a lone target has no negative: the epoch's last steps are skipped
            samples = None if sampler is None else torch.from_numpy(sampler.draw())
            loss, hidden = _step_loss(
                network,
                optimizer,
                params,
                torch.from_numpy(step.inputs),
                torch.from_numpy(step.targets),
                hidden,
                samples,
                log_popularity,
            )
            total += loss * len(step.targets)
            epoch_events += len(step.targets)
            if schedule is not None:
                schedule.record(time.perf_counter() - step_started)
        elapsed = time.perf_counter() - epoch_started
        loss_value = float(total) / max(1, epoch_events)
        if not math.isfinite(loss_value):
            raise RuntimeError(f"gru4rec training diverged in epoch {epoch + 1} (loss {loss_value})")
        events += epoch_events
        best_rate = max(best_rate, epoch_events / max(elapsed, 1e-9))
        logger.info(
            "gru4rec epoch %d/%d: loss %.5f, %.1f s, %.0f events/s",
            epoch + 1,
            params.num_epochs,
            loss_value,
            elapsed,
            epoch_events / max(elapsed, 1e-9),
        )
    network.eval()
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started
    return {
        "train_loss": loss_value,
        "train_seconds": seconds,
        "events_per_second": events / max(seconds, 1e-9),
        "best_epoch_events_per_second": best_rate,
        "events_per_cpu_second": events / max(cpu_seconds, 1e-9),
        "threads": schedule.mean_threads if schedule is not None else float(params.num_threads),
    }
