"""EASE fit time at scale: a synthetic shopper x variant matrix of 20,000 items (the ``max_items`` default).

Usage: ``.venv/bin/python bench/ease_scale.py [--items 20000] [--users 100000] [--per-user 30] [--l2 300]``

Shoppers draw ``--per-user`` distinct items from a Zipf-like popularity (exponent 0.8), so every item occurs. The
fit is timed end to end through ``EaseModel.fit`` (one lambda, no holdout: the time of one refit), with its parts:
the matrix from the events, the Gram matrix, and the blocked Cholesky-based inverse. The target is <= 80 s on the
2-core machine; timings are noisy when other processes share the cores (the load average is printed).
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np
import pandas as pd

from recommender_system.prediction.config import EventWeights
from recommender_system.prediction.models.base import TrainingData
from recommender_system.prediction.models.ease import EaseModel, ease_weights, gram_matrix
from recommender_system.prediction.models.interactions import build_interactions


def synthetic_events(n_items: int, n_users: int, per_user: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.8
    popularity /= popularity.sum()
    users = np.repeat(np.arange(n_users), per_user)
    items = rng.choice(n_items, size=n_users * per_user, p=popularity)
    items[:n_items] = np.arange(n_items)  # every item occurs at least once
    frame = pd.DataFrame({"user": users, "item": items}).drop_duplicates()
    skus = np.array([f"v{i:05d}" for i in range(n_items)], dtype=object)
    return pd.DataFrame(
        {
            "user_key": frame["user"].astype(str).to_numpy(),
            "session_id": frame["user"].astype(str).to_numpy(),
            "sku": skus[frame["item"].to_numpy()],
            "event": "order",
            "weight": 1.0,
            "timestamp": pd.Timestamp("2024-01-01", tz="UTC")
            + pd.to_timedelta(rng.uniform(0, 3e7, len(frame)), unit="s"),
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--per-user", type=int, default=30)
    parser.add_argument("--l2", type=float, default=300.0)
    parser.add_argument("--skip-parts", action="store_true", help="time only EaseModel.fit")
    args = parser.parse_args()

    events = synthetic_events(args.items, args.users, args.per_user)
    print(
        f"events: {len(events):,} ({args.users:,} shoppers x {args.items:,} items); load {os.getloadavg()}",
        flush=True,
    )

    weights = EventWeights(order=1.0)
    if not args.skip_parts:
        time_parts(events, weights, args.items, args.l2)
    fit_model(events, weights, args.l2)
    print(f"load average after: {os.getloadavg()}")


def time_parts(events: pd.DataFrame, weights: EventWeights, n_items: int, l2: float) -> None:
    """The matrix, the Gram matrix and the inverse, one by one."""
    started, cpu_started = time.perf_counter(), time.process_time()
    fitted = build_interactions(events, weights, max_items=n_items)
    built = time.perf_counter()
    gram = gram_matrix(fitted.matrix)
    grammed = time.perf_counter()
    ease_weights(gram, l2)
    inverted = time.perf_counter()
    print(
        f"parts: matrix {built - started:.1f} s, Gram {grammed - built:.1f} s, "
        f"inverse and B {inverted - grammed:.1f} s (n = {fitted.n_items:,}, nnz = {fitted.matrix.nnz:,}); "
        f"{time.process_time() - cpu_started:.1f} s CPU; load {os.getloadavg()}",
        flush=True,
    )


def fit_model(events: pd.DataFrame, weights: EventWeights, l2: float) -> None:
    """``EaseModel.fit`` end to end at one lambda, without a holdout."""
    model = EaseModel()
    hyperparameters = {"event_weights": weights.model_dump(), "holdout": False, "l2_options": [l2]}
    started, cpu_started = time.perf_counter(), time.process_time()
    model.fit(TrainingData(events=events, hyperparameters=hyperparameters))
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"EaseModel.fit: {seconds:.1f} s wall, {cpu:.1f} s CPU (all threads) for {len(model.items):,} items "
        f"(target <= 80 s wall on an otherwise idle 2-core machine); peak RSS {peak:.0f} MB",
        flush=True,
    )


if __name__ == "__main__":
    main()
