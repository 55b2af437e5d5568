"""The prediction pipeline on a hand-built catalogue: exclusions per page, de-duplication, limit, back-fill,
cascade fallback (disabled, not ready, failing), NaN fill, diversity, seeds, the category cache, product positions
and the log record. No database: the serving state is handed to the model manager directly."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

from recommender_system.domain import (
    CatalogSnapshot,
    Page,
    RecommendationContext,
    SessionHistory,
)
from recommender_system.managers.cache import CacheManager
from recommender_system.managers.model import ModelManager, ServingState, untrained_models
from recommender_system.prediction.config import PipelineConfig
from recommender_system.prediction.models.base import PredictionModel
from recommender_system.prediction.pipeline import PredictionPipeline
from recommender_system.storage.prediction_log import PredictionRecord
from tests.factories import CatalogBuilder


# --- test doubles ----------------------------------------------------------------------------------------------
class ScriptedModel(PredictionModel):
    """A model with scripted answers; subclasses pick the registry name (and so the abilities)."""

    def __init__(
        self,
        retrieved: list[str] | None = None,
        scores: Mapping[str, float] | None = None,
        ready: bool = True,
        fail: bool = False,
    ) -> None:
        super().__init__(version="v1")
        self.retrieved = retrieved or []
        self.scores = dict(scores or {})
        self.ready = ready
        self.fail = fail
        self.contexts: list[RecommendationContext] = []

    def is_ready(self, ctx: RecommendationContext, catalog: CatalogSnapshot) -> bool:
        return self.ready

    def retrieve(self, ctx: RecommendationContext, catalog: CatalogSnapshot, size: int) -> np.ndarray:
        self.contexts.append(ctx)
        if self.fail:
            raise RuntimeError("scripted failure")
        return np.array([catalog.sku_index.get(s, -1) for s in self.retrieved], dtype=np.int64)

    def score(self, ctx: RecommendationContext, catalog: CatalogSnapshot, candidates: np.ndarray) -> np.ndarray:
        self.contexts.append(ctx)
        if self.fail:
            raise RuntimeError("scripted failure")
        return np.array([self.scores.get(str(catalog.skus[i]), np.nan) for i in candidates], dtype=np.float64)


class FakeEase(ScriptedModel):
    name = "ease"


class FakeCooccurrence(ScriptedModel):
    name = "cooccurrence"


class FakeSimilarity(ScriptedModel):
    name = "similarity"

    def __init__(self, positions: Mapping[str, tuple[float, float]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.positions = positions
        self.asked: list[list[str]] = []

    def distances(self, catalog: CatalogSnapshot, indices: np.ndarray) -> np.ndarray:
        skus = [str(catalog.skus[i]) for i in indices]
        self.asked.append(skus)
        points = np.array([self.positions.get(s, (0.0, 0.0)) for s in skus], dtype=np.float64).reshape(-1, 2)
        return np.linalg.norm(points[:, None] - points[None, :], axis=2)


class RecordingWriter:
    def __init__(self) -> None:
        self.records: list[PredictionRecord] = []

    def submit(self, record: PredictionRecord) -> None:
        self.records.append(record)


class FakeHistoryStore:
    def __init__(self, history: SessionHistory) -> None:
        self.history = history
        self.calls: list[tuple[str | None, str | None]] = []

    def load(self, session_id: str | None, user_id: str | None = None) -> SessionHistory:
        self.calls.append((session_id, user_id))
        return self.history


# --- the catalogue ---------------------------------------------------------------------------------------------
def shop() -> CatalogSnapshot:
    """a1/a2 siblings (product 1); b1 popular but out of stock; d1 not eligible; categories 1 and 2."""
    builder = CatalogBuilder(categories={1: ["a1", "a2", "b1", "c1", "d1"], 2: ["e1", "f1"]})
    builder.add("a1", product_id=1, units=10, created_at=1)
    builder.add("a2", product_id=1, units=1, created_at=2)
    builder.add("b1", product_id=2, units=50, stock=0, created_at=3)
    builder.add("c1", product_id=3, units=5, created_at=4)
    builder.add("d1", product_id=4, units=100, eligible=False, created_at=5)
    builder.add("e1", product_id=5, units=3, created_at=6)
    builder.add("f1", product_id=6, units=0, created_at=7)
    builder.add("g1", product_id=7, units=2, created_at=8)
    return builder.build()


RECOMMENDABLE = {"a1", "a2", "c1", "e1", "f1", "g1"}
BY_UNITS = ["a1", "c1", "e1", "g1", "a2", "f1"]


class Harness:
    def __init__(
        self,
        catalog: CatalogSnapshot | None = None,
        config: PipelineConfig | None = None,
        models: Mapping[str, PredictionModel] | None = None,
        history: SessionHistory | None = None,
        seed: int | None = 0,
        cache: CacheManager | None = None,
    ) -> None:
        self.config = config or PipelineConfig()
        self.catalog = catalog if catalog is not None else shop()
        self.manager = ModelManager(database=None, config_store=None, snapshot_store=None)  # type: ignore[arg-type]
        self.models = {**untrained_models(self.config), **(models or {})}
        self.serve(revision=1)
        self.writer = RecordingWriter()
        self.history = FakeHistoryStore(history or SessionHistory(visited=("c1",), session_visited=("c1",)))
        self.cache = cache if cache is not None else CacheManager(size=100)
        self.pipeline = PredictionPipeline(
            self.manager,
            self.cache,
            self.history,  # type: ignore[arg-type]
            self.writer,  # type: ignore[arg-type]
            seed=seed,
        )

    def serve(self, revision: int) -> None:
        self.manager.serve(ServingState(self.config, self.catalog, self.models, revisions={"catalog": revision}))

    def skus(self, page: Page, **kwargs: Any) -> list[str]:
        return list(self.pipeline.recommend(RecommendationContext(page=page, **kwargs)).skus)


# --- exclusions, duplicates, limit ------------------------------------------------------------------------------
def test_homepage_ranks_by_popularity_without_ineligible_or_out_of_stock() -> None:
    harness = Harness()
    recommendation = harness.pipeline.recommend(RecommendationContext(page=Page.HOMEPAGE))
    assert list(recommendation.skus) == BY_UNITS
    assert recommendation.model_name == recommendation.model_identifier == "popularity"
    assert recommendation.retrieval_model == "popularity"


def test_limit_truncates_and_zero_gives_nothing() -> None:
    harness = Harness()
    assert harness.skus(Page.HOMEPAGE, limit=3) == BY_UNITS[:3]
    assert harness.skus(Page.HOMEPAGE, limit=0) == []


def test_without_limit_at_most_the_retrieval_size() -> None:
    harness = Harness(config=PipelineConfig(retrieval_size=2))
    assert harness.skus(Page.HOMEPAGE) == BY_UNITS[:2]
    # a limit above the retrieval size is still honoured exactly
    assert harness.skus(Page.HOMEPAGE, limit=5) == BY_UNITS[:5]


def test_product_detail_excludes_the_viewed_product_and_its_siblings() -> None:
    harness = Harness()
    # the backend sends one SKU; its sibling a2 (same product) is excluded too; unknown SKUs are harmless
    assert harness.skus(Page.PRODUCT_DETAIL, variants=("a1", "no-such-sku")) == ["c1", "e1", "g1", "f1"]


def test_cart_excludes_the_cart_items_only() -> None:
    harness = Harness()
    assert harness.skus(Page.CART, cart=("a1", "c1")) == ["e1", "g1", "a2", "f1"]


def test_category_list_keeps_descendant_members_with_out_of_stock_last() -> None:
    harness = Harness()
    # members a1 a2 b1 c1 d1: d1 not eligible; b1 (most popular) is out of stock so goes last
    assert harness.skus(Page.CATEGORY_LIST, category_id=1) == ["a1", "c1", "a2", "b1"]
    assert harness.skus(Page.CATEGORY_LIST, category_id=1, limit=2) == ["a1", "c1"]
    assert harness.skus(Page.CATEGORY_LIST, category_id=404) == []


def test_category_list_retrieval_model_is_none() -> None:
    harness = Harness()
    recommendation = harness.pipeline.recommend(RecommendationContext(page=Page.CATEGORY_LIST, category_id=2))
    assert recommendation.retrieval_model == ""
    assert recommendation.model_name == "popularity"


# --- back-fill and cascades -------------------------------------------------------------------------------------
def test_backfill_from_the_next_model_without_duplicates() -> None:
    # co-occurrence retrieves a duplicate, an excluded cart item, an ineligible and an out-of-stock variant
    cooccurrence = FakeCooccurrence(retrieved=["c1", "c1", "a1", "d1", "b1", "nope"], scores={"c1": 1.0})
    harness = Harness(models={"cooccurrence": cooccurrence})
    recommendation = harness.pipeline.recommend(RecommendationContext(page=Page.CART, cart=("a1",), limit=4))
    # c1 is all co-occurrence gives; popularity fills up to exactly 4; c1 (scored by co-occurrence) leads
    assert list(recommendation.skus) == ["c1", "e1", "g1", "a2"]
    assert recommendation.retrieval_model == "cooccurrence"
    assert recommendation.model_name == "cooccurrence"
    assert recommendation.model_identifier == "cooccurrence_v1"


def test_backfill_reaches_dummy_when_the_cascade_runs_dry() -> None:
    cooccurrence = FakeCooccurrence(retrieved=["a2"], scores={"a2": 1.0})
    config = PipelineConfig(cart_retrieval_cascade=["cooccurrence"], cart_scoring_cascade=["cooccurrence"])
    harness = Harness(config=config, models={"cooccurrence": cooccurrence})
    skus = harness.skus(Page.CART, cart=("c1",), limit=5)
    assert len(skus) == len(set(skus)) == 5
    assert set(skus) <= RECOMMENDABLE - {"c1"}
    assert skus[0] == "a2"  # co-occurrence's candidate and score first, then dummy's, in catalogue order
    assert skus[1:] == ["a1", "e1", "f1", "g1"]


def test_exactly_limit_items_whenever_the_catalogue_has_them() -> None:
    harness = Harness()
    for limit in range(0, 8):
        skus = harness.skus(Page.HOMEPAGE, limit=limit)
        assert len(skus) == min(limit, len(RECOMMENDABLE))
        assert len(set(skus)) == len(skus)


def test_disabled_model_is_skipped() -> None:
    harness = Harness(config=PipelineConfig(models_disabled={"popularity": True}))
    recommendation = harness.pipeline.recommend(RecommendationContext(page=Page.HOMEPAGE, limit=4))
    assert recommendation.model_name == "selection"
    assert recommendation.retrieval_model == "selection"


def test_not_ready_model_is_skipped() -> None:
    builder = CatalogBuilder()
    for sku in ("x", "y", "z"):
        builder.add(sku, product_id=1)
    harness = Harness(catalog=builder.build())  # nothing ordered: popularity is not ready
    assert harness.pipeline.recommend(RecommendationContext(page=Page.HOMEPAGE)).model_name == "selection"
    ease = FakeEase(scores={"x": 1.0}, ready=False)
    harness = Harness(catalog=builder.build(), models={"ease": ease})
    assert harness.pipeline.recommend(RecommendationContext(page=Page.HOMEPAGE)).model_name == "selection"
    assert ease.contexts == []


def test_empty_cascades_mean_dummy_in_catalogue_order() -> None:
    config = PipelineConfig(homepage_retrieval_cascade=[], homepage_scoring_cascade=[])
    recommendation = Harness(config=config).pipeline.recommend(RecommendationContext(page=Page.HOMEPAGE))
    assert recommendation.model_name == "dummy"
    assert list(recommendation.skus) == ["a1", "a2", "c1", "e1", "f1", "g1"]


def test_a_failing_model_falls_back_instead_of_failing_the_request() -> None:
    ease = FakeEase(retrieved=["a1"], scores={"a1": 1.0}, fail=True)
    harness = Harness(models={"ease": ease})
    recommendation = harness.pipeline.recommend(RecommendationContext(page=Page.HOMEPAGE, limit=3))
    assert recommendation.model_name == "popularity"
    assert list(recommendation.skus) == BY_UNITS[:3]


def test_nan_scores_are_filled_by_the_next_scoring_model() -> None:
    # ease scores only g1 and e1; the rest is ordered by popularity, after them
    ease = FakeEase(retrieved=[], scores={"e1": 1.0, "g1": 2.0})
    harness = Harness(models={"ease": ease})
    recommendation = harness.pipeline.recommend(RecommendationContext(page=Page.HOMEPAGE))
    assert list(recommendation.skus) == ["g1", "e1", "a1", "c1", "a2", "f1"]
    assert recommendation.model_name == "ease"


def test_history_is_loaded_once_and_only_for_trained_models() -> None:
    harness = Harness()
    harness.skus(Page.HOMEPAGE, session_id="s1")
    assert harness.history.calls == []  # untrained models do not read history: no query
    ease = FakeEase(scores={"a1": 1.0})
    harness = Harness(models={"ease": ease})
    harness.skus(Page.HOMEPAGE, session_id="s1", user_id="7")
    assert harness.history.calls == [("s1", "7")]
    assert all(ctx.history.visited == ("c1",) for ctx in ease.contexts)
    harness.skus(Page.HOMEPAGE)  # anonymous: no query
    assert len(harness.history.calls) == 1


# --- ordering ----------------------------------------------------------------------------------------------------
def test_diversity_reorders_the_top_with_similarity_distances() -> None:
    # c1 nearly duplicates a1; g1 and e1 lie far apart: the popularity order a1 c1 e1 g1 becomes a1 g1 e1 c1
    positions = {"a1": (0.0, 0.0), "c1": (0.1, 0.0), "e1": (5.0, 0.0), "g1": (0.0, 10.0)}
    similarity = FakeSimilarity(positions=positions)
    config = PipelineConfig(
        homepage_retrieval_cascade=["popularity"], homepage_scoring_cascade=["popularity"], ordering_size=4
    )
    harness = Harness(config=config, models={"similarity": similarity})
    recommendation = harness.pipeline.recommend(RecommendationContext(page=Page.HOMEPAGE))
    assert similarity.asked == [["a1", "c1", "e1", "g1"]]  # only the top ordering_size
    assert list(recommendation.skus) == ["a1", "g1", "e1", "c1", "a2", "f1"]  # the rest keeps its order
    assert harness.writer.records[-1].ordering_model_name == "similarity"


def test_no_diversity_when_similarity_is_disabled() -> None:
    similarity = FakeSimilarity(positions={"g1": (10.0, 0.0)})
    config = PipelineConfig(models_disabled={"similarity": True}, ordering_size=4)
    harness = Harness(config=config, models={"similarity": similarity})
    assert harness.skus(Page.HOMEPAGE) == BY_UNITS
    assert similarity.asked == []
    assert harness.writer.records[-1].ordering_model_name is None


# --- randomness, cache -------------------------------------------------------------------------------------------
def _wide_catalog(n: int = 40) -> CatalogSnapshot:
    builder = CatalogBuilder(categories={1: [f"v{i}" for i in range(n)]})
    for i in range(n):
        builder.add(f"v{i}", product_id=i)
    return builder.build()


SELECTION_ONLY = PipelineConfig(
    homepage_retrieval_cascade=["selection"],
    homepage_scoring_cascade=["selection"],
    category_list_scoring_cascade=["selection"],
)


def test_random_models_are_deterministic_under_the_pipeline_seed() -> None:
    first = Harness(catalog=_wide_catalog(), config=SELECTION_ONLY, seed=42)
    second = Harness(catalog=_wide_catalog(), config=SELECTION_ONLY, seed=42)
    runs = [first.skus(Page.HOMEPAGE, limit=10) for _ in range(3)]
    assert runs == [second.skus(Page.HOMEPAGE, limit=10) for _ in range(3)]
    assert len({tuple(run) for run in runs}) == 3  # each request draws anew
    fixed = RecommendationContext(page=Page.HOMEPAGE, limit=10, seed=7)
    assert first.pipeline.recommend(fixed).skus == second.pipeline.recommend(fixed).skus


def test_category_order_is_stable_per_session_until_the_catalogue_changes() -> None:
    harness = Harness(catalog=_wide_catalog(), config=SELECTION_ONLY)
    first = harness.skus(Page.CATEGORY_LIST, category_id=1, session_id="s1")
    assert harness.skus(Page.CATEGORY_LIST, category_id=1, session_id="s1", limit=5) == first[:5]
    assert harness.skus(Page.CATEGORY_LIST, category_id=1, session_id="s1") == first
    anonymous = {tuple(harness.skus(Page.CATEGORY_LIST, category_id=1)) for _ in range(3)}
    assert len(anonymous) == 3  # not cached without a session
    harness.serve(revision=2)  # a catalogue change invalidates the session's ordering
    assert harness.skus(Page.CATEGORY_LIST, category_id=1, session_id="s1") != first


def test_category_order_survives_an_orders_only_refresh() -> None:
    import dataclasses

    harness = Harness(catalog=_wide_catalog(), config=SELECTION_ONLY)
    first = harness.skus(Page.CATEGORY_LIST, category_id=1, session_id="s1")
    # new order counts: a new snapshot sharing the catalogue layout, same catalogue revision
    harness.catalog = dataclasses.replace(harness.catalog, revision=99, units_ordered=np.ones(len(harness.catalog)))
    harness.serve(revision=1)
    assert harness.skus(Page.CATEGORY_LIST, category_id=1, session_id="s1") == first


# --- product positions, log ----------------------------------------------------------------------------------------
def test_product_positions_map_products_to_their_best_variant() -> None:
    harness = Harness()
    positions = harness.pipeline.product_positions(
        RecommendationContext(page=Page.CATEGORY_LIST, category_id=1, limit=2)
    )
    # ranking a1 c1 a2 b1 (the limit is ignored): product 1 at 0, 3 at 1, 2 at 3; product 4 (d1 not eligible)
    # has no ranked variant and gets the ranking length
    assert positions == {"1": 0, "2": 3, "3": 1, "4": 4}
    assert harness.pipeline.product_positions(RecommendationContext(page=Page.CATEGORY_LIST, category_id=9)) == {}


def test_every_answer_is_logged_with_models_durations_and_skus() -> None:
    harness = Harness()
    harness.skus(Page.CART, cart=("a1",), limit=2, session_id="s9", user_id="u1")
    record = harness.writer.records[-1]
    assert record.recommendation_type == "CART"
    assert (record.session_id, record.user_id) == ("s9", "u1")
    assert record.skus == ("c1", "e1")
    assert (record.retrieval_model_name, record.scoring_model_name) == ("popularity", "popularity")
    assert record.retrieval_duration >= 0 and record.scoring_duration >= 0 and record.ordering_duration >= 0
    harness.pipeline.product_positions(RecommendationContext(page=Page.CATEGORY_LIST, category_id=1))
    assert harness.writer.records[-1].recommendation_type == "CATEGORY_LIST"
    assert len(harness.writer.records) == 2


@pytest.mark.parametrize("page", [Page.HOMEPAGE, Page.PRODUCT_DETAIL, Page.CART])
def test_empty_catalogue_answers_empty(page: Page) -> None:
    harness = Harness(catalog=CatalogSnapshot.empty())
    recommendation = harness.pipeline.recommend(RecommendationContext(page=page, variants=("a",), cart=("a",)))
    assert recommendation.skus == ()
