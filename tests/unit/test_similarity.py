"""The similarity model: its distance (checked against a plain-Python reference written from the definition),
its neighbour search (exact and filtered paths against brute force), and serving, saving and loading.

The original's tests (``similarity/test_categorical.py``, ``test_numerical.py``) are re-expressed as the two
four-item fixtures: d(1,2) = d(1,3) < d(1,4), and retrieval for "1" leaves "1" out and ranks "2" before "4".
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recommender_system.domain import CatalogSnapshot, Page, RecommendationContext
from recommender_system.prediction.models.base import TrainingData
from recommender_system.prediction.models.similarity import SearchSettings, SimilarityModel, _embedding
from tests.factories import is_mapped

ATTRIBUTE_COLUMNS = ["sku", "attribute_type_id", "type", "raw_value", "numeric_value"]


# --- helpers ------------------------------------------------------------------------------------------------------
def variants_frame(skus: list[str], prices: list[float] | None = None, eligible: list[bool] | None = None):
    return pd.DataFrame(
        {
            "sku": skus,
            "product_id": range(len(skus)),
            "price": prices if prices is not None else [np.nan] * len(skus),
            "stock": 5,
            "eligible": eligible if eligible is not None else [True] * len(skus),
        }
    )


def categorical(rows: list[tuple[str, int, str]]) -> list[tuple]:
    return [(sku, type_id, "CATEGORICAL", value, None) for sku, type_id, value in rows]


def numerical(rows: list[tuple[str, int, float]]) -> list[tuple]:
    return [(sku, type_id, "NUMERICAL", str(value), float(value)) for sku, type_id, value in rows]


def fit(variants: pd.DataFrame, rows: list[tuple], search: SearchSettings | None = None, **hyper) -> SimilarityModel:
    model = SimilarityModel(search=search)
    attributes = pd.DataFrame(rows, columns=ATTRIBUTE_COLUMNS)
    model.fit(TrainingData(variants=variants, attributes=attributes, hyperparameters=hyper))
    return model


def snapshot(skus: list[str], revision: int = 1) -> CatalogSnapshot:
    n = len(skus)
    return CatalogSnapshot(
        revision=revision,
        skus=np.array(skus, dtype=object),
        product_ids=np.arange(n, dtype=np.int64),
        stock=np.full(n, 5, dtype=np.int64),
        eligible=np.ones(n, dtype=bool),
        weights=np.ones(n),
        created_at=np.zeros(n),
        units_ordered=np.zeros(n),
        recent_units_ordered=np.zeros(n),
    )


def detail(*skus: str) -> RecommendationContext:
    return RecommendationContext(page=Page.PRODUCT_DETAIL, variants=tuple(skus))


def pair(model: SimilarityModel, catalog: CatalogSnapshot, a: str, b: str) -> float:
    matrix = model.distances(catalog, np.array([catalog.sku_index[a], catalog.sku_index[b]]))
    return float(matrix[0, 1])


class Reference:
    """The distance of the module docstring, computed naively from the raw frames."""

    def __init__(self, variants: pd.DataFrame, attributes: pd.DataFrame) -> None:
        self.features: dict[str, dict[object, tuple[str, object]]] = {str(s): {} for s in variants["sku"]}
        prices = {str(s): p for s, p in zip(variants["sku"], variants["price"], strict=True) if not pd.isna(p)}
        if prices:
            logs = {s: math.log1p(max(p, 0.0)) for s, p in prices.items()}
            lo, hi = np.percentile(list(logs.values()), [1.0, 99.0])
            for sku, value in logs.items():
                scaled = 0.5 if hi <= lo else min(max((value - lo) / (hi - lo), 0.0), 1.0)
                self.features[sku]["price"] = ("num", scaled)
        for type_id, group in attributes.groupby("attribute_type_id"):
            if group["type"].iloc[0] == "NUMERICAL":
                means = group.groupby("sku")["numeric_value"].mean()
                lo, hi = means.min(), means.max()
                for sku, value in means.items():
                    self.features[sku][type_id] = ("num", 0.5 if hi <= lo else (value - lo) / (hi - lo))
            else:
                for sku, values in group.groupby("sku")["raw_value"]:
                    self.features[sku][type_id] = ("cat", frozenset(values))

    def known(self, sku: str) -> bool:
        return bool(self.features[sku])

    def distance(self, a: str, b: str) -> float:
        fa, fb = self.features[a], self.features[b]
        union = set(fa) | set(fb)
        if not union:
            return 0.0
        total = 0.0
        for key in union:
            if key in fa and key in fb:
                (kind, x), (_, y) = fa[key], fb[key]
                if kind == "cat":
                    total += 1.0 - len(x & y) / len(x | y)
                else:
                    total += (x - y) ** 2
            else:
                total += 1.0
        return total / len(union)


def random_case(n: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Missing values, ties, exact duplicates, multi-valued sets, a large vocabulary (hashed in the filter),
    variants with no feature at all and ineligible variants."""
    rng = np.random.default_rng(seed)
    skus = [f"s{i}" for i in range(n)]
    prices = np.round(rng.lognormal(3.0, 1.0, n), 2)
    prices[rng.random(n) < 0.1] = np.nan
    bare = rng.random(n) < 0.03
    prices[bare] = np.nan
    variants = variants_frame(skus, list(prices), list(rng.random(n) >= 0.1))
    rows: list[tuple] = []
    for i, sku in enumerate(skus):
        if bare[i]:
            continue
        if rng.random() >= 0.2:
            rows += categorical([(sku, 1, f"a{rng.integers(5)}")])
        rows += categorical([(sku, 2, f"b{rng.integers(200)}")])
        if rng.random() >= 0.3:
            tags = rng.choice(15, size=rng.integers(1, 4), replace=False)
            rows += categorical([(sku, 3, f"t{t}") for t in tags])
        if rng.random() >= 0.2:
            rows += numerical([(sku, 4, float(rng.uniform(0, 100)))])
        rows += numerical([(sku, 5, float(rng.integers(0, 3)))])
    for loner in range(3):  # share nothing with anyone (d = 1): no neighbours, and nobody's neighbour
        variants.loc[len(variants)] = [f"loner{loner}", 2000 + loner, np.nan, 5, True]
        rows += categorical([(f"loner{loner}", 9, f"alone{loner}")])
    for copy in range(5):  # exact duplicates of s1 (distance 0 to it and to each other)
        twin = f"dup{copy}"
        variants.loc[len(variants)] = [twin, 1000 + copy, variants.loc[1, "price"], 5, True]
        rows += [(twin, *row[1:]) for row in rows if row[0] == "s1"]
    return variants, pd.DataFrame(rows, columns=ATTRIBUTE_COLUMNS)


def brute_force(reference: Reference, skus: list[str], eligible: set[str], row: str, k: int) -> list[float]:
    distances = [reference.distance(row, other) for other in skus if other != row and other in eligible]
    return sorted(d for d in distances if d < 1.0)[:k]


# --- the original's fixtures ----------------------------------------------------------------------------------
def test_categorical_fixture_relations_and_retrieval() -> None:
    # 4 items, 3 categorical types (A, B, C) with 2 values each, 2 types defined per item
    rows = categorical(
        [
            ("1", 1, "a1"),
            ("1", 2, "b1"),
            ("2", 1, "a1"),
            ("2", 2, "b2"),
            ("3", 1, "a2"),
            ("3", 2, "b1"),
            ("4", 1, "a1"),
            ("4", 3, "c1"),
        ]
    )
    skus = ["1", "2", "3", "4"]
    model = fit(variants_frame(skus), rows)
    catalog = snapshot(skus)
    d12, d13, d14 = (pair(model, catalog, "1", other) for other in ("2", "3", "4"))
    assert d12 == pytest.approx(0.5)  # one of two shared types differs
    assert d13 == pytest.approx(d12)
    assert d14 == pytest.approx(2 / 3)  # A agrees, B and C are defined by one item only
    assert d12 < d14
    retrieved = [skus[i] for i in model.retrieve(detail("1"), catalog, 10)]
    assert "1" not in retrieved
    assert retrieved.index("2") < retrieved.index("4")
    assert retrieved.index("3") < retrieved.index("4")


def test_numerical_fixture_relations_and_retrieval() -> None:
    # price (equal for all) plus 3 numerical types, 2 of them defined per item
    rows = numerical(
        [
            ("1", 1, 0.0),
            ("1", 2, 0.0),
            ("2", 1, 0.0),
            ("2", 2, 10.0),
            ("3", 1, 10.0),
            ("3", 2, 0.0),
            ("4", 1, 10.0),
            ("4", 3, 0.0),
        ]
    )
    skus = ["1", "2", "3", "4"]
    model = fit(variants_frame(skus, [20.0] * 4), rows)
    catalog = snapshot(skus)
    d12, d13, d14 = (pair(model, catalog, "1", other) for other in ("2", "3", "4"))
    assert d12 == pytest.approx(1 / 3)  # price and type 1 agree, type 2 is at opposite ends
    assert d13 == pytest.approx(d12)
    assert d14 == pytest.approx(3 / 4)  # price agrees, type 1 opposite, types 2 and 3 one-sided
    retrieved = [skus[i] for i in model.retrieve(detail("1"), catalog, 10)]
    assert "1" not in retrieved
    assert retrieved.index("2") < retrieved.index("4")
    scores = model.score(detail("1"), catalog, np.arange(4))
    assert scores[1] == pytest.approx(-d12) and scores[3] == pytest.approx(-d14)


# --- the distance -----------------------------------------------------------------------------------------------
def test_multi_valued_types_use_jaccard_on_value_sets() -> None:
    rows = categorical(
        [("x", 1, "drama"), ("x", 1, "crime"), ("y", 1, "drama"), ("z", 1, "comedy"), ("w", 1, "crime")]
        + [("w", 1, "drama"), ("w", 1, "war")]
    )
    skus = ["x", "y", "z", "w"]
    model = fit(variants_frame(skus), rows)
    catalog = snapshot(skus)
    assert pair(model, catalog, "x", "y") == pytest.approx(0.5)  # {drama} of {drama, crime}
    assert pair(model, catalog, "x", "w") == pytest.approx(1 - 2 / 3)
    assert pair(model, catalog, "x", "z") == pytest.approx(1.0)  # nothing in common
    # z shares nothing with anyone: it has no neighbour, and is nobody's neighbour
    assert model.retrieve(detail("z"), catalog, 10).tolist() == []
    assert catalog.sku_index["z"] not in model.retrieve(detail("x"), catalog, 10).tolist()


def test_missing_values_count_as_a_full_difference_and_joint_absence_is_ignored() -> None:
    rows = categorical([("u", 1, "a"), ("u", 2, "b"), ("v", 1, "a"), ("w", 1, "a"), ("x", 1, "a"), ("x", 2, "b")])
    skus = ["u", "v", "w", "x", "p"]
    model = fit(variants_frame(skus, [np.nan, np.nan, 30.0, np.nan, 30.0]), rows)
    catalog = snapshot(skus)
    assert pair(model, catalog, "u", "v") == pytest.approx(0.5)  # type 2 only defined by u
    assert pair(model, catalog, "v", "w") == pytest.approx(0.5)  # price only defined by w
    assert pair(model, catalog, "u", "x") == pytest.approx(0.0)  # missing price on both sides: ignored
    assert pair(model, catalog, "w", "p") == pytest.approx(0.5)  # same price, type 1 only defined by w


def test_numerical_values_are_min_max_normalised_per_type_and_price_on_a_log_scale() -> None:
    rows = numerical([("a", 1, 100.0), ("b", 1, 150.0), ("c", 1, 200.0)])
    model = fit(variants_frame(["a", "b", "c"]), rows)
    catalog = snapshot(["a", "b", "c"])
    assert pair(model, catalog, "a", "b") == pytest.approx(0.25)  # (0.5)^2 over one feature
    prices = [50.0, 100.0, 1000.0, 10000.0, 50000.0]
    model = fit(variants_frame(["p", "q", "r", "s", "t"], prices), [])
    catalog = snapshot(["p", "q", "r", "s", "t"])
    # ratios matter: the steps 100 -> 1000 and 1000 -> 10000 are (almost exactly) equally long
    assert pair(model, catalog, "q", "r") == pytest.approx(pair(model, catalog, "r", "s"), rel=0.02)
    # one extreme price does not squeeze all the others together (scale between the 1st and 99th percentile)
    skus = [f"v{i}" for i in range(201)]
    prices = list(np.geomspace(10.0, 1000.0, 200)) + [1e9]
    model = fit(variants_frame(skus, prices), [])
    catalog = snapshot(skus)
    assert pair(model, catalog, "v0", "v199") > 0.9
    assert pair(model, catalog, "v199", "v200") < 0.01  # the outlier is clipped to the top of the scale


def test_variants_without_any_feature_are_unknown() -> None:
    rows = categorical([("a", 1, "x"), ("b", 1, "x")])
    skus = ["a", "b", "bare"]
    model = fit(variants_frame(skus), rows)
    catalog = snapshot(skus)
    assert "bare" not in model.skus
    assert not model.is_ready(detail("bare"), catalog)
    assert np.isnan(model.score(detail("a"), catalog, np.array([2]))[0])
    assert model.distances(catalog, np.array([0, 2]))[0, 1] == 0.0
    assert 2 not in model.retrieve(detail("a"), catalog, 10).tolist()


# --- the neighbour search -------------------------------------------------------------------------------------
SEARCHES = {
    "exact": SearchSettings(),
    # tiny blocks and tiles so that every step of the filtered search runs many times; a small
    # bucket budget so that the 200-value type is hashed into shared buckets
    "filtered-float32": SearchSettings(
        exact_limit=0, block_rows=48, tile_columns=64, dtype="float32", bucket_budget=24, workers=1
    ),
    "filtered-bfloat16": SearchSettings(
        exact_limit=0, block_rows=64, tile_columns=96, dtype="bfloat16", bucket_budget=40
    ),
}


@pytest.mark.parametrize("search", list(SEARCHES))
def test_neighbour_lists_equal_brute_force(search: str) -> None:
    variants, attributes = random_case(260, seed=7)
    k = 12
    model = SimilarityModel(search=SEARCHES[search])
    report = model.fit(TrainingData(variants=variants, attributes=attributes, hyperparameters={"neighbours": k}))
    if search != "exact":  # the filter spares most of the exact distance computations
        assert report.metrics["exact_pairs_per_variant"] < 0.5 * len(model.skus)
    reference = Reference(variants, attributes)
    skus = [str(s) for s in variants["sku"]]
    known = [s for s in skus if reference.known(s)]
    assert sorted(model.skus) == sorted(known)
    eligible = {str(s) for s, e in zip(variants["sku"], variants["eligible"], strict=True) if e} & set(known)
    assert model.neighbours is not None and model.neighbour_distances is not None
    assert model.neighbours.shape == (len(known), k)
    for row, sku in enumerate(model.skus):
        listed = [model.skus[j] for j in model.neighbours[row] if j >= 0]
        got = [float(d) for d in model.neighbour_distances[row] if np.isfinite(d)]
        assert len(listed) == len(got) == len(set(listed))
        assert sku not in listed and set(listed) <= eligible
        expected = brute_force(reference, known, eligible, sku, k)
        np.testing.assert_allclose(got, expected, atol=1e-6, err_msg=f"row {sku}")
        np.testing.assert_allclose(got, [reference.distance(sku, other) for other in listed], atol=1e-6)
    # the duplicates of s1 are each other's nearest neighbours at distance 0
    row = model.skus.index("dup0")
    assert model.neighbour_distances[row][0] == 0.0
    assert (model.neighbours[model.skus.index("loner0")] == -1).all()


def test_distances_equal_brute_force_symmetric_with_zero_diagonal() -> None:
    variants, attributes = random_case(120, seed=3)
    model = fit(variants, attributes.values.tolist())
    reference = Reference(variants, attributes)
    catalog_skus = [str(s) for s in variants["sku"]] + ["never-seen"]
    catalog = snapshot(catalog_skus)
    indices = np.random.default_rng(0).choice(len(catalog_skus) - 1, 40, replace=False)
    indices = np.append(indices, len(catalog_skus) - 1)
    matrix = model.distances(catalog, indices)
    assert matrix.shape == (41, 41) and matrix.dtype == np.float64
    np.testing.assert_array_equal(matrix, matrix.T)
    np.testing.assert_array_equal(np.diag(matrix), 0.0)
    for i, a in enumerate(indices):
        for j, b in enumerate(indices):
            sku_a, sku_b = catalog_skus[a], catalog_skus[b]
            if i == j or sku_a == "never-seen" or sku_b == "never-seen":
                assert matrix[i, j] == 0.0
            elif not (reference.known(sku_a) and reference.known(sku_b)):
                assert matrix[i, j] == 0.0  # a variant with no feature carries no information
            else:
                assert matrix[i, j] == pytest.approx(reference.distance(sku_a, sku_b), abs=1e-9)


def test_neighbours_setting_from_either_hyperparameter_form() -> None:
    variants, attributes = random_case(60, seed=1)
    rows = attributes.values.tolist()
    model = SimilarityModel()
    report = model.fit(
        TrainingData(
            variants=variants,
            attributes=pd.DataFrame(rows, columns=ATTRIBUTE_COLUMNS),
            hyperparameters={"similarity_config": {"neighbours": 4}},
        )
    )
    assert model.neighbours is not None and model.neighbours.shape[1] == 4
    assert report.hyperparameters == {"neighbours": 4}
    assert report.n_items == len(model.skus)
    assert fit(variants, rows, neighbours=7).neighbours.shape[1] == 7
    default = fit(variants, rows)  # the default k (100) is capped at the other variants' count
    assert default.neighbours.shape[1] == len(default.skus) - 1


def test_fit_without_variants_or_features_is_an_error() -> None:
    with pytest.raises(ValueError):
        SimilarityModel().fit(TrainingData())
    with pytest.raises(ValueError):
        fit(variants_frame(["a", "b"]), [])  # no price, no attribute: nothing to compare


def sets_only_case() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Only a multi-valued type, with many identical sets: there Ochiai equals Jaccard, so the bound is tight."""
    rng = np.random.default_rng(2)
    skus = [f"m{i}" for i in range(60)]
    rows = []
    for sku in skus:
        for value in rng.choice(5, size=rng.integers(2, 4), replace=False):
            rows += categorical([(sku, 1, f"g{value}")])
    return variants_frame(skus), pd.DataFrame(rows, columns=ATTRIBUTE_COLUMNS)


@pytest.mark.parametrize("case", ["mixed", "sets-only"])
def test_filter_vectors_are_exact_in_bfloat16_and_bound_the_similarity_from_above(case: str) -> None:
    """The filter's guarantee: a_u . b_v >= S(u, v) for the fixed dims, presence products count the shared
    features exactly, and every value survives bfloat16 unchanged (the search truncates to bfloat16)."""
    variants, attributes = random_case(150, seed=5) if case == "mixed" else sets_only_case()
    model = fit(variants, attributes.values.tolist())
    features = model.features
    embedding = _embedding(features, bucket_budget=24)  # small: the 200-value type shares buckets
    for matrix in (embedding.a, embedding.b):
        assert not (matrix.view(np.uint32) & np.uint32(0xFFFF)).any()
    n = len(features)
    rows = np.arange(n)
    fixed = embedding.dynamic
    bound = embedding.a[:, :fixed].astype(np.float64) @ embedding.b[:, :fixed].T.astype(np.float64)
    shared = embedding.presence.astype(np.float64) @ embedding.presence.T.astype(np.float64)
    union = features.counts[:, None] + features.counts[None, :] - shared
    exact_similarity = (1.0 - features.block_distances(rows, rows)) * union
    # values held by one variant get no bucket (they never match another variant), so only u != v is bounded
    others = ~np.eye(n, dtype=bool)
    assert (bound[others] >= exact_similarity[others] - 1e-9).all()
    if case == "mixed":
        assert (bound - exact_similarity)[others].max() > 0.1  # hashing and Ochiai do loosen it somewhere
    presence = features.presence.astype(np.int64)
    np.testing.assert_array_equal(shared, presence.T @ presence)


# --- serving ------------------------------------------------------------------------------------------------
def serving_case() -> tuple[SimilarityModel, Reference, list[str]]:
    variants, attributes = random_case(80, seed=11)
    model = fit(variants, attributes.values.tolist(), neighbours=3)
    return model, Reference(variants, attributes), [str(s) for s in variants["sku"]]


def test_score_is_minus_the_exact_distance_to_the_nearest_anchor_and_nan_when_unknown() -> None:
    model, reference, skus = serving_case()
    catalog = snapshot([*skus, "never-seen"])
    anchors = ("s2", "s5")
    ctx = RecommendationContext(page=Page.CART, cart=anchors)
    candidates = np.arange(len(catalog))
    scores = model.score(ctx, catalog, candidates)
    for index in candidates:
        sku = str(catalog.skus[index])
        if sku == "never-seen" or not reference.known(sku):
            assert np.isnan(scores[index])
        else:  # also for the many candidates outside the 3-neighbour lists
            assert scores[index] == pytest.approx(-min(reference.distance(sku, a) for a in anchors), abs=1e-9)


def test_retrieve_unions_the_anchors_neighbours_nearest_first_without_the_anchors() -> None:
    model, reference, skus = serving_case()
    catalog = snapshot(skus)
    anchors = ("s2", "s5", "s9")
    retrieved = [skus[i] for i in model.retrieve(detail(*anchors), catalog, 100)]
    listed = set()
    for anchor in anchors:
        row = model.skus.index(anchor)
        listed |= {model.skus[j] for j in model.neighbours[row] if j >= 0}
    assert set(retrieved) == listed - set(anchors)
    nearest = [min(reference.distance(s, a) for a in anchors) for s in retrieved]
    assert nearest == sorted(nearest)
    assert len(model.retrieve(detail(*anchors), catalog, 2)) == 2
    assert model.retrieve(detail(*anchors), catalog, 0).tolist() == []


def test_catalogue_mapping_follows_the_catalogue_revision() -> None:
    model, _, skus = serving_case()
    first = snapshot(skus, revision=1)
    retrieved = [skus[i] for i in model.retrieve(detail("s2"), first, 10)]
    shuffled = list(reversed(skus))[:-3]  # another order, and some variants gone
    second = snapshot(shuffled, revision=2)
    again = [shuffled[i] for i in model.retrieve(detail("s2"), second, 10)]
    assert again == [s for s in retrieved if s in shuffled]


def test_readiness_needs_a_known_anchor() -> None:
    model, _, skus = serving_case()
    catalog = snapshot(skus)
    assert not SimilarityModel().is_ready(detail("s2"), catalog)  # not fitted
    assert not model.is_ready(detail("unknown"), catalog)
    assert not model.is_ready(RecommendationContext(page=Page.CART, cart=()), catalog)
    assert not model.is_ready(RecommendationContext(page=Page.HOMEPAGE, variants=("s2",)), catalog)
    assert model.is_ready(detail("unknown", "s2"), catalog)
    assert model.is_ready(RecommendationContext(page=Page.CART, cart=("s4",)), catalog)
    unknown = detail("unknown")
    assert model.retrieve(unknown, catalog, 10).tolist() == []
    assert np.isnan(model.score(unknown, catalog, np.arange(5))).all()


def test_save_load_round_trip(tmp_path: Path) -> None:
    model, _, skus = serving_case()
    catalog = snapshot([*skus, "never-seen"])
    model.save(tmp_path)
    loaded = SimilarityModel.load(tmp_path, "v3")
    assert loaded.identifier == "similarity_v3"
    assert set(SimilarityModel.artefact_files) <= {p.name for p in tmp_path.iterdir()}
    assert is_mapped(loaded.neighbours) and is_mapped(loaded.features.numeric)
    np.testing.assert_array_equal(loaded.neighbours, model.neighbours)
    ctx = detail("s2", "s7")
    candidates = np.arange(len(catalog))
    np.testing.assert_array_equal(loaded.score(ctx, catalog, candidates), model.score(ctx, catalog, candidates))
    assert loaded.retrieve(ctx, catalog, 20).tolist() == model.retrieve(ctx, catalog, 20).tolist()
    np.testing.assert_array_equal(loaded.distances(catalog, candidates[:30]), model.distances(catalog, candidates[:30]))


def test_a_loaded_model_serves_without_importing_torch(tmp_path: Path) -> None:
    """torch (about 190 MB per process) is only for the fit's neighbour search; a web worker never imports it."""
    import json
    import subprocess
    import sys

    model, _, skus = serving_case()
    model.save(tmp_path)
    script = f"""
import sys
import numpy as np
from recommender_system.server import limit_native_threads
limit_native_threads()
from recommender_system.prediction.models.similarity import SimilarityModel
from tests.unit.test_similarity import detail, snapshot
skus = {json.dumps(skus)}
catalog = snapshot(skus)
loaded = SimilarityModel.load({str(tmp_path)!r}, "v1")
candidates = np.arange(len(catalog))
loaded.score(detail(skus[2]), catalog, candidates)
loaded.retrieve(detail(skus[2]), catalog, 10)
loaded.distances(catalog, candidates[:20])
assert "torch" not in sys.modules, "torch was imported"
"""
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
