"""Offline quality of the user-item models: protocol A of EVALUATION.md on UCI Online Retail.

Usage: ``.venv/bin/python bench/quality.py [--models popularity,cooccurrence,ease,als] [--path P] [--bootstrap]``

For each model: hyper-parameters chosen on the validation split inside train (``tune``), a timed fit at the chosen
ones (the fastest of ``--fit-repeats``; wall and process CPU seconds), and Recall/NDCG/MRR/HR/Coverage@20 on
test. ``--bootstrap`` adds a paired bootstrap (1,000 resamples over test users) of each model's NDCG@20 and
Recall@20 against popularity. Fit times are wall-clock on a shared machine: read them with the load average
printed next to them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os

from trainer import online_retail
from trainer.evaluation import paired_bootstrap

REFERENCE = {
    "popularity": (0.052, 0.044),
    "cooccurrence": (0.105, 0.093),
    "ease": (0.121, 0.106),
    "als": (0.114, 0.101),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(online_retail.MODELS))
    parser.add_argument("--path", default=None)
    parser.add_argument("--bootstrap", action="store_true", help="paired bootstrap against popularity")
    parser.add_argument("--json", action="store_true", help="also print one JSON line per model")
    parser.add_argument("--fit-repeats", type=int, default=3, help="report the fastest of this many final fits")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)

    split = online_retail.prepare(args.path)
    print(
        f"protocol A: {len(split.users)} train users x {len(split.items)} items, {split.train.nnz} train pairs, "
        f"{split.n_test_users} test users, {split.test.nnz} test pairs"
    )
    names = [name.strip() for name in args.models.split(",") if name.strip()]
    results = {}
    header = (
        f"{'model':<13} {'Recall@20':>9} {'NDCG@20':>8} {'MRR@20':>7} {'HR@20':>6} {'Cov@20':>6} "
        f"{'fit s':>7} {'cpu s':>7} {'tune s':>7} {'peak MB':>8} {'load':>5}  reference R/N, chosen"
    )
    print(header)
    for name in names:
        result = online_retail.evaluate(name, split, fit_repeats=args.fit_repeats)
        results[name] = result
        m = result.metrics
        reference = REFERENCE.get(name)
        expected = f"{reference[0]:.3f}/{reference[1]:.3f}" if reference else "-"
        print(
            f"{name:<13} {m['recall@20']:>9.4f} {m['ndcg@20']:>8.4f} {m['mrr@20']:>7.4f} {m['hr@20']:>6.3f} "
            f"{m['coverage@20']:>6.3f} {result.fit_seconds:>7.3f} {result.fit_cpu_seconds:>7.3f} "
            f"{result.tune_seconds:>7.1f} "
            f"{result.peak_rss_mb:>8.0f} {os.getloadavg()[0]:>5.1f}  "
            f"{expected} {json.dumps(result.hyperparameters)}",
            flush=True,
        )
        if args.json:
            print(json.dumps(result.as_dict()))

    if args.bootstrap and "popularity" in results:
        base = results["popularity"].ranking
        print("paired bootstrap against popularity (1,000 resamples over test users): mean difference [95% interval]")
        for name, result in results.items():
            if name == "popularity":
                continue
            ranking = result.ranking
            assert (ranking.users == base.users).all()
            ndcg = paired_bootstrap(ranking.ndcg, base.ndcg)
            recall = paired_bootstrap(ranking.recall, base.recall)
            print(
                f"{name:<13} NDCG@20 {ndcg.difference:+.4f} [{ndcg.low:+.4f}, {ndcg.high:+.4f}]  "
                f"Recall@20 {recall.difference:+.4f} [{recall.low:+.4f}, {recall.high:+.4f}]"
            )
    if args.bootstrap and {"ease", "als"} <= set(results):
        ease, als = results["ease"].ranking, results["als"].ranking
        diff = paired_bootstrap(ease.ndcg, als.ndcg)
        print(f"ease - als     NDCG@20 {diff.difference:+.4f} [{diff.low:+.4f}, {diff.high:+.4f}]")


if __name__ == "__main__":
    main()
