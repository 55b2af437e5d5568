"""Protocol B of EVALUATION.md: the session view of UCI Online Retail and GRU4Rec's next-item metric.

Preparation (EVALUATION.md B): rows with ``Quantity > 0`` and a ``Description``, minus eight pseudo-products; a
session is one invoice keyed by ``(CustomerID or -1, Country, InvoiceDate)`` whose events keep their row order
(time = invoice time in ms plus the row's index within the invoice); each (session, item) kept once; then three
passes of "items with >= 5 events, sessions with >= 2 events"; a time split 30 days before the last event.

Metric: for every event of a test session but its last, all items are scored given the session so far and the
next item is ranked with conservative ties (items scoring equal to it count as ahead). Recall@20 is the share of
queries with rank <= 20, MRR@20 the mean of 1/rank over them (0 otherwise).

Run ``python -m trainer evaluate --dataset online-retail --model gru4rec [--json] [--path P]`` (or call ``main``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse

from recommender_system.prediction.models.base import TrainingData

logger = logging.getLogger(__name__)

DEFAULT_PATH = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "data"
    / "uci-online-retail"
    / "online_retail_full_541909rows.parquet"
)
PSEUDO_PRODUCTS = (
    "POSTAGE",
    "DOTCOM POSTAGE",
    "Manual",
    "CARRIAGE",
    "Discount",
    "AMAZON FEE",
    "Bank Charges",
    "SAMPLES",
)
MIN_ITEM_EVENTS = 5
MIN_SESSION_EVENTS = 2
FILTER_PASSES = 3
TEST_DAYS = 30
CUTOFF = 20
MODELS = ("gru4rec", "popularity", "cooccurrence-knn", "all")


@dataclass
class SessionSplit:
    """Train and test events, columns ``SessionId`` (int), ``ItemId`` (str), ``Time`` (int ms), sorted by
    session then time."""

    train: pd.DataFrame
    test: pd.DataFrame
    n_items: int = 0
    stats: dict[str, int] = field(default_factory=dict)


def load_sessions(path: Path = DEFAULT_PATH) -> pd.DataFrame:
    """Steps 1-3: invoices as sessions, each (session, item) once, three filter passes."""
    raw = pd.read_parquet(path, columns=["Description", "Quantity", "InvoiceDate", "CustomerID", "Country"])
    rows = raw[(raw["Quantity"] > 0) & raw["Description"].notna() & ~raw["Description"].isin(PSEUDO_PRODUCTS)]
    rows = rows.reset_index(drop=True)
    customer = rows["CustomerID"].fillna(-1).astype(np.int64)
    keys = pd.DataFrame({"customer": customer, "country": rows["Country"], "invoice": rows["InvoiceDate"]})
    session = keys.groupby(["customer", "country", "invoice"], sort=True, dropna=False).ngroup().to_numpy()
    invoice_ms = rows["InvoiceDate"].to_numpy().astype("datetime64[ms]").astype(np.int64)
    within = pd.Series(session).groupby(session).cumcount().to_numpy()
    events = pd.DataFrame(
        {"SessionId": session.astype(np.int64), "ItemId": rows["Description"].to_numpy(), "Time": invoice_ms + within}
    )
    events = events.drop_duplicates(["SessionId", "ItemId"], keep="first")
    for _ in range(FILTER_PASSES):
        item_counts = events["ItemId"].map(events["ItemId"].value_counts())
        events = events[item_counts.to_numpy() >= MIN_ITEM_EVENTS]
        session_counts = events["SessionId"].map(events["SessionId"].value_counts())
        events = events[session_counts.to_numpy() >= MIN_SESSION_EVENTS]
    return events.sort_values(["SessionId", "Time"], kind="stable").reset_index(drop=True)


def split_sessions(events: pd.DataFrame, test_days: int = TEST_DAYS) -> SessionSplit:
    """Step 4: the time split; test restricted to train items and sessions with >= 2 events."""
    cut = int(events["Time"].max()) - test_days * 86_400_000
    start = events.groupby("SessionId")["Time"].transform("min").to_numpy()
    times = events["Time"].to_numpy()
    train = events[(start < cut) & (times < cut)]
    test = events[start >= cut]
    test = test[test["ItemId"].isin(pd.unique(train["ItemId"]))]
    test = test[test["SessionId"].map(test["SessionId"].value_counts()).to_numpy() >= MIN_SESSION_EVENTS]
    train = train.reset_index(drop=True)
    test = test.reset_index(drop=True)
    stats = {
        "train_events": len(train),
        "train_sessions": int(train["SessionId"].nunique()),
        "test_events": len(test),
        "test_sessions": int(test["SessionId"].nunique()),
        "items": int(train["ItemId"].nunique()),
        "queries": len(test) - int(test["SessionId"].nunique()),
    }
    return SessionSplit(train=train, test=test, n_items=stats["items"], stats=stats)


# --- metrics ----------------------------------------------------------------------------------------------
def next_item_queries(test: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(current item, next item) of every test event but the last of its session, as ItemId values."""
    sessions = test["SessionId"].to_numpy()
    items = test["ItemId"].to_numpy()
    same = sessions[1:] == sessions[:-1]
    return items[:-1][same], items[1:][same]


def summarise(ranks: np.ndarray, cutoff: int = CUTOFF) -> dict[str, float]:
    """Recall@k and MRR@k of 1-based ranks (conservative ties already applied)."""
    ranks = np.asarray(ranks, dtype=np.float64)
    hit = ranks <= cutoff
    return {
        f"recall@{cutoff}": float(hit.mean()) if len(ranks) else 0.0,
        f"mrr@{cutoff}": float(np.where(hit, 1.0 / ranks, 0.0).mean()) if len(ranks) else 0.0,
        "queries": int(len(ranks)),
    }


def conservative_ranks(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Rank of each row's target column: items scoring at least as high as the target count as ahead of it."""
    target_scores = scores[np.arange(len(targets)), targets]
    return (scores >= target_scores[:, None]).sum(axis=1)


# --- baselines --------------------------------------------------------------------------------------------
def popularity_ranks(split: SessionSplit) -> np.ndarray:
    """Items ranked by their number of train events, whatever the session."""
    counts = split.train["ItemId"].value_counts()
    _, targets = next_item_queries(split.test)
    target_counts = counts.reindex(targets).fillna(0).to_numpy()
    ordered = np.sort(counts.to_numpy())
    return len(ordered) - np.searchsorted(ordered, target_counts, side="left")


def cooccurrence_ranks(split: SessionSplit, shrink: float = 20.0, chunk: int = 4096) -> np.ndarray:
    """Items ranked by cosine similarity to the current item over train sessions (the item itself excluded):
    ``|S_i & S_j| / (sqrt(|S_i| |S_j|) + shrink)``."""
    items = pd.Index(np.unique(split.train["ItemId"].to_numpy()))
    session_codes, _ = pd.factorize(split.train["SessionId"])
    item_codes = items.get_indexer(split.train["ItemId"].to_numpy())
    ones = np.ones(len(item_codes), dtype=np.float32)
    incidence = sparse.csr_matrix((ones, (session_codes, item_codes)), shape=(session_codes.max() + 1, len(items)))
    together = (incidence.T @ incidence).toarray()
    sizes = np.diag(together).astype(np.float64)
    similarity = (together / (np.sqrt(np.outer(sizes, sizes)) + shrink)).astype(np.float32)
    np.fill_diagonal(similarity, 0.0)
    current, targets = next_item_queries(split.test)
    current_codes, target_codes = items.get_indexer(current), items.get_indexer(targets)
    ranks = np.empty(len(targets), dtype=np.int64)
    for start in range(0, len(targets), chunk):
        rows = slice(start, start + chunk)
        ranks[rows] = conservative_ranks(similarity[current_codes[rows]], target_codes[rows])
    return ranks


# --- GRU4Rec ----------------------------------------------------------------------------------------------
def training_data(train: pd.DataFrame, hyperparameters: dict[str, Any], seed: int) -> TrainingData:
    """The train events as the trainer hands them to a model: every event a view of its invoice session."""
    events = pd.DataFrame(
        {
            "user_key": "s:" + train["SessionId"].astype(str),
            "session_id": train["SessionId"].astype(str),
            "sku": train["ItemId"].astype(str),
            "event": "view",
            "weight": 1.0,
            "timestamp": pd.to_datetime(train["Time"].to_numpy(), unit="ms", utc=True),
        }
    )
    events = events.iloc[np.argsort(train["Time"].to_numpy(), kind="stable")].reset_index(drop=True)
    return TrainingData(events=events, hyperparameters=hyperparameters, seed=seed)


def evaluate_gru4rec(split: SessionSplit, hyperparameters: dict[str, Any], seed: int) -> dict[str, Any]:
    """Fit our ``Gru4recModel`` on the train part and rank every next item of the test part."""
    from recommender_system.prediction.models.gru4rec import Gru4recModel

    data = training_data(split.train, hyperparameters, seed)
    model = Gru4recModel()
    load_before = os.getloadavg()[0]
    started, cpu_started = time.perf_counter(), time.process_time()
    report = model.fit(data)
    fit_seconds = time.perf_counter() - started
    fit_cpu_seconds = time.process_time() - cpu_started
    started = time.perf_counter()
    ranks = model.rank_next_items(split.test)
    evaluation_seconds = time.perf_counter() - started
    result: dict[str, Any] = summarise(ranks)
    result.update(
        {
            "fit_seconds": round(fit_seconds, 2),
            "fit_cpu_seconds": round(fit_cpu_seconds, 2),
            "load_average_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "train_seconds": round(report.metrics.get("train_seconds", 0.0), 2),
            "train_events_per_second": round(report.metrics.get("events_per_second", 0.0)),
            "best_epoch_events_per_second": round(report.metrics.get("best_epoch_events_per_second", 0.0)),
            "train_events_per_cpu_second": round(report.metrics.get("events_per_cpu_second", 0.0)),
            "train_loss": report.metrics.get("train_loss"),
            "mean_threads": round(report.metrics.get("threads", 0.0), 2),
            "evaluation_seconds": round(evaluation_seconds, 2),
            "hyperparameters": report.hyperparameters,
        }
    )
    return result


def peak_memory_mb() -> float:
    """Peak resident memory of this process (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run(
    path: Path = DEFAULT_PATH, model: str = "gru4rec", hyperparameters: dict[str, Any] | None = None, seed: int = 0
) -> dict[str, Any]:
    """Prepare protocol B and evaluate the chosen model(s); returns the figures as a JSON-ready dict."""
    started = time.perf_counter()
    split = split_sessions(load_sessions(path))
    result: dict[str, Any] = {"protocol": "B", "dataset": "online-retail", "split": split.stats}
    result["preparation_seconds"] = round(time.perf_counter() - started, 2)
    if model in ("popularity", "all"):
        result["popularity"] = summarise(popularity_ranks(split))
    if model in ("cooccurrence-knn", "all"):
        result["cooccurrence-knn"] = summarise(cooccurrence_ranks(split))
    if model in ("gru4rec", "all"):
        result["gru4rec"] = evaluate_gru4rec(split, dict(hyperparameters or {}), seed)
    result["peak_memory_mb"] = round(peak_memory_mb(), 1)
    return result


def format_result(result: dict[str, Any]) -> str:
    stats = result["split"]
    lines = [
        f"protocol B, online-retail: {stats['train_events']} train events in {stats['train_sessions']} sessions, "
        f"{stats['test_sessions']} test sessions, {stats['items']} items, {stats['queries']} queries",
    ]
    for name in ("popularity", "cooccurrence-knn", "gru4rec"):
        figures = result.get(name)
        if not figures:
            continue
        line = (
            f"{name:17s} Recall@{CUTOFF} {figures[f'recall@{CUTOFF}']:.4f}  MRR@{CUTOFF} {figures[f'mrr@{CUTOFF}']:.4f}"
        )
        if name == "gru4rec":
            f = figures
            line += (
                f"\n{'':17s} fit {f['fit_seconds']:.1f} s ({f['fit_cpu_seconds']:.1f} s CPU), training"
                f" {f['train_events_per_second']} events/s (fastest epoch {f['best_epoch_events_per_second']},"
                f" {f['train_events_per_cpu_second']} per CPU second), evaluation {f['evaluation_seconds']:.1f} s,"
                f" {f['mean_threads']} threads on average, load average {f['load_average_before_after']}"
            )
        lines.append(line)
    lines.append(f"peak memory {result['peak_memory_mb']:.0f} MB")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m trainer evaluate --dataset online-retail --model gru4rec [--json] [--path P]``."""
    parser = argparse.ArgumentParser(prog="python -m trainer evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="online-retail", choices=["online-retail"])
    parser.add_argument("--model", default="gru4rec", choices=MODELS)
    parser.add_argument("--path", type=Path, default=DEFAULT_PATH, help="the Online Retail parquet file")
    parser.add_argument("--params", default="{}", help="GRU4Rec hyper-parameters as a JSON object")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--verbose", action="store_true", help="log each training epoch")
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "evaluate":
        args = args[1:]
    options = parser.parse_args(args)
    if options.verbose:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if not options.path.exists():
        parser.error(f"{options.path} does not exist")
    hyperparameters = json.loads(options.params)
    if not isinstance(hyperparameters, dict):
        parser.error("--params must be a JSON object")
    result = run(options.path, options.model, hyperparameters, options.seed)
    sys.stdout.write(json.dumps(result) + "\n" if options.json else format_result(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
