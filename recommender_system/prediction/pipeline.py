"""The leveled prediction pipeline: retrieval -> scoring -> ordering -> limit, then a queued log record.

One request reads one ``ServingState`` (config, catalogue snapshot, loaded models) and makes at most one database
query, the shopper's history, and only when a model that reads history (a trained one) could serve the page.

- **Retrieval.** Category lists: the category's eligible variants (descendants included). Other pages: the first
  ready model of the retrieval cascade; when exclusions leave fewer than the target (``limit``, else the retrieval
  size), the next ready models of the cascade (and finally dummy) add their candidates, never a duplicate.
- **Exclusions** (a boolean mask over the catalogue): not eligible; out of stock (category lists keep them and put
  them last); on product detail the viewed variants and every variant of their products; on the cart page the cart.
- **Scoring.** The first ready model of the scoring cascade scores all candidates; those it cannot score (NaN) are
  scored by the next model, and so on (a fallback scorer). Candidates are ranked by tier (the model that scored
  them, cascade order), then score, then retrieval position: scores of different models are never compared.
- **Ordering.** Greedy max-sum diversity over the top ``ordering_size`` with the similarity model's distances when
  it is loaded and enabled; then out-of-stock last on category lists. Then ``limit``.

A session's category-list ordering is cached (``CacheManager``) so that its pages stay stable until the catalogue
changes. ``rs_info`` names the scoring model (as the ecoseller recommender does).
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np

from recommender_system import metrics
from recommender_system.domain import CatalogSnapshot, Page, Phase, Recommendation, RecommendationContext
from recommender_system.managers.cache import CachedRanking, CacheManager
from recommender_system.managers.model import ModelManager, ServingState
from recommender_system.managers.prediction_log import PredictionLogWriter
from recommender_system.prediction import ordering
from recommender_system.prediction.models.base import PredictionModel
from recommender_system.prediction.models.registry import SPECS
from recommender_system.storage.history import HistoryStore
from recommender_system.storage.prediction_log import LOGGED_ITEMS, PredictionRecord
from recommender_system.storage.tables import utcnow

logger = logging.getLogger(__name__)

EMPTY = np.array([], dtype=np.int64)
SIMILARITY = "similarity"


def _eligible_members(category_id: int, catalog: CatalogSnapshot) -> np.ndarray:
    """The eligible variants of a category and its descendants (in or out of stock), in catalogue order."""
    members = np.asarray(catalog.category_variants[category_id], dtype=np.int64)
    return members[catalog.eligible[members]]


@dataclass
class Ranking:
    """Catalogue indices best first, with the models and durations that produced them."""

    indices: np.ndarray
    model_name: str
    model_identifier: str
    retrieval_model: str = ""
    retrieval_identifier: str = ""
    ordering_model: str | None = None
    retrieval_duration: float = 0.0
    scoring_duration: float = 0.0
    ordering_duration: float = 0.0


class PredictionPipeline:
    def __init__(
        self,
        model_manager: ModelManager,
        cache_manager: CacheManager,
        history_store: HistoryStore,
        log_writer: PredictionLogWriter,
        seed: int | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._models = model_manager
        self._cache = cache_manager
        self._history = history_store
        self._log = log_writer
        self._random = random.Random(seed)
        self._clock = clock

    # --- the two entry points ----------------------------------------------------------------------------------
    def recommend(self, ctx: RecommendationContext) -> Recommendation:
        """The ranked SKUs for one page, at most ``ctx.limit`` of them."""
        state = self._models.state
        ctx = self._seeded(ctx)
        if ctx.page is Page.CATEGORY_LIST:
            ranking = self._category_ranking(ctx, state)
        else:
            ranking = self._page_ranking(ctx, state)
        indices = ranking.indices if ctx.limit is None else ranking.indices[: max(ctx.limit, 0)]
        recommendation = Recommendation(
            page=ctx.page,
            skus=tuple(state.catalog.skus[indices].tolist()),
            model_name=ranking.model_name,
            model_identifier=ranking.model_identifier,
            retrieval_model=ranking.retrieval_model,
            retrieval_identifier=ranking.retrieval_identifier,
            durations={
                "retrieval": ranking.retrieval_duration,
                "scoring": ranking.scoring_duration,
                "ordering": ranking.ordering_duration,
            },
        )
        self._record(ctx, ranking, recommendation.skus)
        return recommendation

    def product_positions(self, ctx: RecommendationContext) -> dict[str, int]:
        """Product id -> the smallest position of any of its variants in the category ranking (descendant
        categories included); products with no ranked variant get the ranking's length."""
        state = self._models.state
        ctx = self._seeded(dataclasses.replace(ctx, page=Page.CATEGORY_LIST, limit=None))
        ranking = self._category_ranking(ctx, state)
        catalog = state.catalog
        products = catalog.category_products.get(ctx.category_id, EMPTY) if ctx.category_id is not None else EMPTY
        positions = ordering.group_positions(catalog.product_ids[ranking.indices], products)
        self._record(ctx, ranking, tuple(catalog.skus[ranking.indices[:LOGGED_ITEMS]].tolist()))
        keys = catalog.memo(f"category-product-keys:{ctx.category_id}", lambda _: [str(p) for p in products.tolist()])
        return dict(zip(keys, positions.tolist(), strict=True))

    # --- steps --------------------------------------------------------------------------------------------------
    def _seeded(self, ctx: RecommendationContext) -> RecommendationContext:
        if ctx.seed is not None:
            return ctx
        return dataclasses.replace(ctx, seed=self._random.getrandbits(63))

    def _with_history(self, ctx: RecommendationContext, state: ServingState) -> RecommendationContext:
        """Load the shopper's history (the one query) when a loaded trained model could serve this page."""
        if not (ctx.session_id or ctx.user_id) or not ctx.history.is_empty:
            return ctx
        names = [*state.config.cascade(ctx.page, Phase.RETRIEVAL), *state.config.cascade(ctx.page, Phase.SCORING)]
        if not any(SPECS[name].trainable and state.usable(name) is not None for name in names):
            return ctx
        try:
            history = self._history.load(ctx.session_id, ctx.user_id)
        except Exception:  # noqa: BLE001 - without history the cascade still answers
            logger.exception("loading the session history failed; answering without it")
            return ctx
        return dataclasses.replace(ctx, history=history)

    def _category_ranking(self, ctx: RecommendationContext, state: ServingState) -> Ranking:
        catalog = state.catalog
        cached = (
            self._cache.get_category_list(ctx.category_id, ctx.session_id, state.catalog_revision)
            if ctx.category_id is not None
            else None
        )
        if cached is not None:
            if cached.indices is not None and cached.layout is catalog.skus:
                indices = cached.indices  # same catalogue layout and revision: already filtered and ordered
            else:
                indices = catalog.indices(cached.skus)
                indices = indices[indices >= 0]
                indices = ordering.stock_last(indices[catalog.eligible[indices]], catalog.in_stock)
            return Ranking(
                indices, cached.model_name, cached.model_identifier, cached.retrieval_model, cached.retrieval_identifier
            )
        started = self._clock()
        ctx = self._with_history(ctx, state)
        candidates = EMPTY
        if ctx.category_id is not None and ctx.category_id in catalog.category_variants:
            candidates = catalog.memo(f"category:{ctx.category_id}", partial(_eligible_members, ctx.category_id))
        retrieved = self._clock()
        ranking = self._score(ctx, state, candidates)
        ranking.retrieval_duration = retrieved - started
        ranking.scoring_duration = self._clock() - retrieved
        self._order(ctx, state, ranking)
        if ctx.category_id is not None and ctx.session_id:  # anonymous orderings are not kept
            self._cache.put_category_list(
                ctx.category_id,
                ctx.session_id,
                CachedRanking(
                    revision=state.catalog_revision,
                    skus=tuple(catalog.skus[ranking.indices].tolist()),
                    model_name=ranking.model_name,
                    model_identifier=ranking.model_identifier,
                    indices=ranking.indices,
                    layout=catalog.skus,
                ),
            )
        return ranking

    def _page_ranking(self, ctx: RecommendationContext, state: ServingState) -> Ranking:
        started = self._clock()
        ctx = self._with_history(ctx, state)
        candidates, retriever = self._retrieve(ctx, state)
        retrieved = self._clock()
        ranking = self._score(ctx, state, candidates)
        ranking.retrieval_model = retriever.name if retriever else ""
        ranking.retrieval_identifier = retriever.identifier if retriever else ""
        ranking.retrieval_duration = retrieved - started
        ranking.scoring_duration = self._clock() - retrieved
        self._order(ctx, state, ranking)
        return ranking

    def allowed_mask(self, ctx: RecommendationContext, state: ServingState) -> np.ndarray:
        """What may be recommended on this (non-category) page: recommendable minus the page's exclusions."""
        catalog = state.catalog
        allowed = catalog.recommendable.copy()
        anchors = ctx.anchors
        if anchors:
            known = catalog.indices(anchors)
            known = known[known >= 0]
            allowed[known] = False
            if ctx.page is Page.PRODUCT_DETAIL:
                for product_id in set(catalog.product_ids[known].tolist()) - {-1}:
                    allowed[catalog.product_ids == product_id] = False
        return allowed

    def _retrieve(self, ctx: RecommendationContext, state: ServingState) -> tuple[np.ndarray, PredictionModel | None]:
        """Candidates from the retrieval cascade, back-filled from its next models; and the primary model."""
        retrieval_size = state.config.retrieval_size
        target = retrieval_size if ctx.limit is None else max(ctx.limit, 0)
        size = max(retrieval_size, target)
        allowed = self.allowed_mask(ctx, state)
        parts: list[np.ndarray] = []
        count = 0
        primary: PredictionModel | None = None
        for model in self._models.chain(ctx, Phase.RETRIEVAL, state):
            if primary is None:
                primary = model
            if count >= target:
                break
            try:
                raw = model.retrieve(ctx, state.catalog, size)
            except Exception:  # noqa: BLE001 - the next model of the cascade back-fills
                logger.exception("%s.retrieve failed; falling back", model.name)
                continue
            admitted = ordering.admit(raw, allowed, size - count)
            parts.append(admitted)
            count += len(admitted)
        candidates = parts[0] if len(parts) == 1 else (np.concatenate(parts) if parts else EMPTY)
        return candidates, primary

    def _score(self, ctx: RecommendationContext, state: ServingState, candidates: np.ndarray) -> Ranking:
        """Rank the candidates with the scoring cascade, NaNs filled by the next models (tiers)."""
        scores = np.full(len(candidates), np.nan)
        tiers = np.zeros(len(candidates), dtype=np.int64)
        remaining = np.arange(len(candidates))
        primary: PredictionModel | None = None
        for tier, model in enumerate(self._models.chain(ctx, Phase.SCORING, state)):
            if not len(remaining):
                primary = model if primary is None else primary
                break
            try:
                part = np.asarray(model.score(ctx, state.catalog, candidates[remaining]), dtype=np.float64)
                if part.shape != remaining.shape:
                    raise ValueError(f"{len(part)} scores for {len(remaining)} candidates")
            except Exception:  # noqa: BLE001 - the next model of the cascade scores instead
                logger.exception("%s.score failed; falling back", model.name)
                continue
            primary = model if primary is None else primary
            known = ~np.isnan(part)
            scores[remaining[known]] = part[known]
            tiers[remaining[known]] = tier
            remaining = remaining[~known]
            if not len(remaining):
                break
        if primary is None:  # every model failed: keep the retrieval order
            primary = state.models["dummy"]
        # only the first max(limit, ordering size) positions matter, except on category lists (cached whole)
        top = None
        if ctx.limit is not None and ctx.page is not Page.CATEGORY_LIST:
            top = max(ctx.limit, state.config.ordering_size)
        indices = candidates[ordering.rank_tiered(scores, tiers, top)] if len(candidates) else EMPTY
        return Ranking(indices, primary.name, primary.identifier)

    def _order(self, ctx: RecommendationContext, state: ServingState, ranking: Ranking) -> None:
        started = self._clock()
        indices = ranking.indices
        size = state.config.ordering_size
        similarity = state.usable(SIMILARITY)
        distances = getattr(similarity, "distances", None)
        if distances is not None and size > 2 and len(indices) > 2:
            top = indices[:size]
            try:
                # a page shows only its first ``limit``: later positions keep their order (category lists are
                # cached whole, so they are ordered whole)
                picks = ctx.limit if ctx.page is not Page.CATEGORY_LIST else None
                permutation = ordering.diversify(distances(state.catalog, top), picks)
                if len(permutation) != len(top):
                    raise ValueError(f"{len(permutation)} positions for {len(top)} items")
                indices = np.concatenate([top[permutation], indices[size:]])
                ranking.ordering_model = SIMILARITY
            except Exception:  # noqa: BLE001 - diversity is an improvement, never a failure
                logger.exception("diversity ordering failed; keeping the scored order")
        if ctx.page is Page.CATEGORY_LIST:
            indices = ordering.stock_last(indices, state.catalog.in_stock)
        ranking.indices = indices
        ranking.ordering_duration = self._clock() - started

    def _record(self, ctx: RecommendationContext, ranking: Ranking, skus: tuple[str, ...]) -> None:
        self._log.submit(
            PredictionRecord(
                created_at=utcnow(),
                recommendation_type=ctx.page.value,
                session_id=ctx.session_id,
                user_id=ctx.user_id,
                retrieval_model_name=ranking.retrieval_model or None,
                retrieval_model_identifier=ranking.retrieval_identifier or None,
                scoring_model_name=ranking.model_name,
                scoring_model_identifier=ranking.model_identifier,
                ordering_model_name=ranking.ordering_model,
                retrieval_duration=ranking.retrieval_duration,
                scoring_duration=ranking.scoring_duration,
                ordering_duration=ranking.ordering_duration,
                skus=skus,
            )
        )
        seconds = ranking.retrieval_duration + ranking.scoring_duration + ranking.ordering_duration
        metrics.observe_prediction(ctx.page.value, ranking.model_name, seconds)
