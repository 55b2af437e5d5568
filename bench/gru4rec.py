"""GRU4Rec on protocol B of EVALUATION.md (UCI Online Retail as invoice sessions): quality and training speed.

Usage: ``.venv/bin/python bench/gru4rec.py [--baselines] [--params '{"num_epochs": 10}'] [--seed 0] [--json]``

Prints Recall@20 and MRR@20 over ~81,700 next-item queries, the training throughput (mini-batch targets per
second, the authors' "events/s"; overall, in the fastest epoch and per CPU second), the fit time (wall and CPU),
the mean torch thread count (``num_threads`` 0 times one and two threads each epoch; pass 1 or 2 to fix it), the
load average before and after (other processes on a shared machine slow training down) and peak memory.
Targets: Recall@20 >= 0.48 and MRR@20 >= 0.24 (official code: 0.506 / 0.254) and >= 8,800 events/s on a 2-core
machine. ``--baselines`` adds popularity (must read 0.035 / 0.008) and co-occurrence kNN (0.332 / 0.170).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer import session_evaluation  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", type=Path, default=session_evaluation.DEFAULT_PATH)
    parser.add_argument("--params", default="{}", help="GRU4Rec hyper-parameters as a JSON object")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--baselines", action="store_true", help="also popularity and co-occurrence kNN")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not args.path.exists():
        print(f"{args.path} is missing: nothing to measure")
        return 1
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    result = session_evaluation.run(
        args.path, "all" if args.baselines else "gru4rec", json.loads(args.params), args.seed
    )
    print(json.dumps(result, indent=1) if args.json else session_evaluation.format_result(result), end="")
    figures = result["gru4rec"]
    print(
        f"targets: Recall@20 {figures['recall@20']:.4f} (>= 0.48), MRR@20 {figures['mrr@20']:.4f} (>= 0.24),"
        f" {figures['train_events_per_second']} events/s (>= 8800)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
