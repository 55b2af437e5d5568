"""Benchmark of the similarity model: fit on synthetic variants, then the per-request calls.

Usage: ``.venv/bin/python bench/similarity.py [--variants 100000] [--neighbours 100] [--check-rows 200]``

The catalogue: products of 1-8 variants. Product-level attributes: brand (400 values, Zipf-like), material
(20 values), tags (multi-valued, 1-3 of 30), weight (numerical). Variant-level: colour (12), size (6), rating
(numerical), price (log-normal around the product's price). Some values are missing, 1% of the variants have no
attribute and no price, 2% are not eligible. ``--check-rows`` recomputes that many rows' neighbours by brute force
(every distance exactly) and reports the share that match.
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np
import pandas as pd

from recommender_system.domain import CatalogSnapshot, Page, RecommendationContext
from recommender_system.prediction.models.base import TrainingData
from recommender_system.prediction.models.similarity import SimilarityModel


def synthetic(n_variants: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 9, size=n_variants)
    product_of = np.repeat(np.arange(len(sizes)), sizes)[:n_variants]
    n_products = int(product_of.max()) + 1
    skus = np.array([f"v{i}" for i in range(n_variants)], dtype=object)
    product_price = rng.lognormal(3.5, 1.0, n_products)
    price = product_price[product_of] * rng.lognormal(0.0, 0.1, n_variants)
    price[rng.random(n_variants) < 0.02] = np.nan
    eligible = rng.random(n_variants) >= 0.02
    variants = pd.DataFrame({"sku": skus, "product_id": product_of, "price": price, "stock": 5, "eligible": eligible})

    brand_weights = 1.0 / np.arange(1, 401)
    brand = rng.choice(400, size=n_products, p=brand_weights / brand_weights.sum())
    material = rng.integers(0, 20, n_products)
    weight = rng.lognormal(0.0, 0.7, n_products)
    frames = []

    def add(type_id: int, kind: str, rows: np.ndarray, values: np.ndarray) -> None:
        raw = values.astype(str) if kind == "CATEGORICAL" else np.round(values, 3).astype(str)
        numeric = values.astype(np.float64) if kind == "NUMERICAL" else np.full(len(rows), np.nan)
        frames.append(
            pd.DataFrame(
                {
                    "sku": skus[rows],
                    "attribute_type_id": type_id,
                    "type": kind,
                    "raw_value": raw,
                    "numeric_value": numeric,
                }
            )
        )

    everyone = np.arange(n_variants)
    bare = rng.random(n_variants) < 0.01
    variants.loc[bare, "price"] = np.nan
    rows = everyone[~bare]
    add(1, "CATEGORICAL", rows, brand[product_of[rows]])
    keep = rows[rng.random(len(rows)) >= 0.05]
    add(2, "CATEGORICAL", keep, material[product_of[keep]])
    keep = rows[rng.random(len(rows)) >= 0.10]
    add(3, "CATEGORICAL", keep, rng.integers(0, 12, len(keep)))  # colour
    keep = rows[rng.random(len(rows)) >= 0.30]
    add(4, "CATEGORICAL", keep, rng.integers(0, 6, len(keep)))  # size
    tagged = np.flatnonzero(rng.random(n_products) >= 0.2)
    product_tags = {int(p): rng.choice(30, size=rng.integers(1, 4), replace=False) for p in tagged}
    tag_rows, tag_values = [], []
    for r in rows:
        tags = product_tags.get(int(product_of[r]))
        if tags is not None:
            tag_rows.extend([r] * len(tags))
            tag_values.extend(tags)
    add(5, "CATEGORICAL", np.array(tag_rows, dtype=np.int64), np.array(tag_values))
    add(6, "NUMERICAL", rows, weight[product_of[rows]])
    keep = rows[rng.random(len(rows)) >= 0.15]
    add(7, "NUMERICAL", keep, rng.uniform(1, 5, len(keep)))  # rating
    return variants, pd.concat(frames, ignore_index=True)


def catalog_of(variants: pd.DataFrame) -> CatalogSnapshot:
    n = len(variants)
    return CatalogSnapshot(
        revision=1,
        skus=variants["sku"].to_numpy(dtype=object),
        product_ids=variants["product_id"].to_numpy(dtype=np.int64),
        stock=np.full(n, 5, dtype=np.int64),
        eligible=variants["eligible"].to_numpy(dtype=bool),
        weights=np.ones(n),
        created_at=np.zeros(n),
        units_ordered=np.zeros(n),
        recent_units_ordered=np.zeros(n),
    )


def timed(fn, repeats: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--variants", type=int, default=100_000)
    parser.add_argument("--neighbours", type=int, default=100)
    parser.add_argument("--check-rows", type=int, default=200)
    args = parser.parse_args()

    variants, attributes = synthetic(args.variants)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"variants {len(variants)}, attribute rows {len(attributes)}, peak RSS before fit {rss_before:.0f} MB")

    model = SimilarityModel(version="bench")
    load_before = os.getloadavg()[0]
    start, cpu_start = time.perf_counter(), time.process_time()
    report = model.fit(
        TrainingData(variants=variants, attributes=attributes, hyperparameters={"neighbours": args.neighbours})
    )
    fit_seconds, fit_cpu = time.perf_counter() - start, time.process_time() - cpu_start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"fit {fit_seconds:.1f} s wall, {fit_cpu:.1f} s CPU (all threads); load average {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after (2 cores); peak RSS {peak:.0f} MB"
    )
    print(f"report {report.metrics}")

    assert model.features is not None and model.neighbours is not None
    if args.check_rows:
        rng = np.random.default_rng(1)
        n = len(model.skus)
        eligible_by_sku = dict(zip(variants["sku"], variants["eligible"], strict=True))
        columns = np.flatnonzero([eligible_by_sku[s] for s in model.skus])
        rows = rng.choice(n, size=min(args.check_rows, n), replace=False)
        exact = 0
        for row in rows:
            d = model.features.block_distances(np.array([row]), columns)[0]
            d[columns == row] = np.inf
            d[d >= 1] = np.inf
            truth = np.sort(d)[: model.neighbours.shape[1]]
            truth = truth[np.isfinite(truth)]
            got = np.asarray(model.neighbour_distances[row])
            got = got[np.isfinite(got)]
            exact += len(got) == len(truth) and np.allclose(got, truth, atol=1e-6)
        print(f"brute-force check: {exact}/{len(rows)} rows have exactly the k nearest distances")

    catalog = catalog_of(variants)
    rng = np.random.default_rng(2)
    known = list(model.skus[:: max(1, len(model.skus) // 1000)])
    detail = RecommendationContext(page=Page.PRODUCT_DETAIL, variants=(known[0], known[1]))
    cart = RecommendationContext(page=Page.CART, cart=tuple(known[:10]))  # 10 x k neighbours: ~1000 candidates
    fifty = rng.choice(len(catalog), 50, replace=False)
    thousand = rng.choice(len(catalog), 1000, replace=False)
    print(f"distances(50 items): {timed(lambda: model.distances(catalog, fifty), 500) * 1e3:.3f} ms")
    for name, ctx in (("2-variant product", detail), ("10-item cart", cart)):
        retrieved = len(model.retrieve(ctx, catalog, 1000))
        retrieve_ms = timed(lambda ctx=ctx: model.retrieve(ctx, catalog, 1000), 200) * 1e3
        score_ms = timed(lambda ctx=ctx: model.score(ctx, catalog, thousand), 200) * 1e3
        print(f"{name}: retrieve {retrieved} candidates {retrieve_ms:.3f} ms, score 1000 candidates {score_ms:.3f} ms")


if __name__ == "__main__":
    main()
