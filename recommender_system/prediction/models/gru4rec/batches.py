"""Session-parallel mini-batches (Hidasi et al. 2016, section 3.1.1) and shared negative samples.

The first ``batch_size`` sessions (in start-time order) occupy the slots of the mini-batch. Each step feeds every
slot's current item and asks for its next item. When a slot's session has no next item left, the next waiting
session takes that slot and the slot's hidden state must be reset to zero; when no session is waiting, the slot is
dropped and the mini-batch shrinks. Each in-session transition is therefore seen exactly once per pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class SessionArrays:
    """Events grouped by session: ``items[offsets[s]:offsets[s + 1]]`` are session ``s``'s item indices in time
    order; ``order`` lists the sessions in the order they enter the mini-batches."""

    items: np.ndarray  # int64
    offsets: np.ndarray  # int64, n_sessions + 1
    order: np.ndarray  # int64

    @property
    def n_sessions(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_active_sessions(self) -> int:
        """Sessions with at least one transition (two events): the ones the mini-batches take."""
        return int((np.diff(self.offsets) >= 2).sum())

    def first_batch_size(self, batch_size: int) -> int:
        """Rows of the first mini-batch (the hidden state to start with)."""
        return min(batch_size, self.n_active_sessions)

    @property
    def n_transitions(self) -> int:
        lengths = np.diff(self.offsets)
        return int(np.maximum(lengths - 1, 0).sum())

    @classmethod
    def from_frame(
        cls, frame: pd.DataFrame, session: str = "SessionId", item: str = "ItemIdx", time: str = "Time"
    ) -> SessionArrays:
        """Build from a frame of integer item indices; rows are stably sorted by (session, time), sessions are
        ordered by their first event's time (ties by session key)."""
        ordered = frame.sort_values([session, time], kind="stable")
        keys = ordered[session].to_numpy()
        boundaries = np.flatnonzero(keys[1:] != keys[:-1]) + 1
        offsets = np.concatenate([[0], boundaries, [len(keys)]]).astype(np.int64)
        if len(keys) == 0:
            offsets = np.zeros(1, dtype=np.int64)
        starts = ordered[time].to_numpy()[offsets[:-1]]
        order = np.argsort(starts, kind="stable").astype(np.int64)
        return cls(ordered[item].to_numpy().astype(np.int64), offsets, order)


@dataclass(frozen=True)
class Step:
    """One mini-batch. Apply ``keep`` (rows of the previous hidden state to keep) first, then zero the rows in
    ``reset``; then feed ``inputs`` and predict ``targets``. ``sessions`` and ``positions`` say which session
    and which event of it each row is (for evaluation and tests)."""

    inputs: np.ndarray
    targets: np.ndarray
    reset: np.ndarray | None
    keep: np.ndarray | None
    sessions: np.ndarray
    positions: np.ndarray


def session_parallel_steps(arrays: SessionArrays, batch_size: int) -> Iterator[Step]:
    """Yield the mini-batches of one pass over the sessions that have at least one transition."""
    if batch_size < 1:
        raise ValueError("batch_size must be positive")
    lengths = np.diff(arrays.offsets)
    queue = arrays.order[lengths[arrays.order] >= 2]
    if len(queue) == 0:
        return
    width = min(batch_size, len(queue))
    sessions = queue[:width].copy()
    next_session = width
    position = arrays.offsets[sessions].copy()
    end = arrays.offsets[sessions + 1].copy()
    reset: np.ndarray | None = np.arange(width)
    keep: np.ndarray | None = None
    items = arrays.items
    while True:
        yield Step(items[position], items[position + 1], reset, keep, sessions, position - arrays.offsets[sessions])
        position = position + 1
        finished = np.flatnonzero(position + 1 >= end)
        reset = None
        keep = None
        if len(finished) == 0:
            continue
        refill = min(len(finished), len(queue) - next_session)
        if refill > 0:
            slots = finished[:refill]
            new_sessions = queue[next_session : next_session + refill]
            next_session += refill
            sessions = sessions.copy()
            sessions[slots] = new_sessions
            position[slots] = arrays.offsets[new_sessions]
            end[slots] = arrays.offsets[new_sessions + 1]
            reset = slots
        if refill < len(finished):
            alive = np.ones(len(sessions), dtype=bool)
            alive[finished[refill:]] = False
            keep = np.flatnonzero(alive)
            if len(keep) == 0:
                return
            sessions, position, end = sessions[keep], position[keep], end[keep]
            if reset is not None:
                # the refilled slots are all kept; renumber them after the drop
                reset = np.searchsorted(keep, reset)
    return


class NegativeSampler:
    """Items drawn with probability proportional to ``popularity ** alpha``, generated in large blocks so that a
    training step only slices a pre-drawn array."""

    def __init__(
        self, popularity: np.ndarray, alpha: float, n_sample: int, rng: np.random.Generator, block: int = 4_000_000
    ) -> None:
        weights = np.asarray(popularity, dtype=np.float64) ** float(alpha)
        total = weights.sum()
        if total <= 0:
            raise ValueError("popularity must have a positive entry")
        self.cumulative = np.cumsum(weights) / total
        self.cumulative[-1] = 1.0
        self.n_sample = int(n_sample)
        self.rng = rng
        self.rows = max(1, block // max(1, self.n_sample))
        self._samples = np.empty((0, self.n_sample), dtype=np.int64)
        self._next = 0

    def _refill(self) -> None:
        uniform = self.rng.random(self.rows * self.n_sample)
        drawn = np.searchsorted(self.cumulative, uniform, side="right")
        self._samples = np.minimum(drawn, len(self.cumulative) - 1).reshape(self.rows, self.n_sample)
        self._next = 0

    def draw(self) -> np.ndarray:
        """The next ``n_sample`` negatives (int64)."""
        if self._next >= len(self._samples):
            self._refill()
        sample = self._samples[self._next]
        self._next += 1
        return sample
