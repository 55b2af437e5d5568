"""``CacheManager``: a bounded LRU per process, invalidated by catalogue revision, or shared through Redis as JSON."""

from __future__ import annotations

import json
import threading
from typing import Any

from recommender_system.domain import Page, RecommendationContext
from recommender_system.managers.cache import CachedRanking, CacheManager
from recommender_system.prediction.config import PipelineConfig
from tests.unit.test_pipeline import Harness, _wide_catalog


def ranking(revision: int, *skus: str) -> CachedRanking:
    return CachedRanking(revision=revision, skus=skus, model_name="selection", model_identifier="selection")


def test_hit_only_for_the_same_session_category_and_revision() -> None:
    cache = CacheManager(size=10)
    cache.put_category_list(1, "s1", ranking(5, "a", "b"))
    assert cache.get_category_list(1, "s1", 5).skus == ("a", "b")
    assert cache.get_category_list(1, "s1", 6) is None  # the catalogue changed since
    assert cache.get_category_list(2, "s1", 5) is None
    assert cache.get_category_list(1, "s2", 5) is None


def test_anonymous_requests_and_size_zero_are_never_cached() -> None:
    cache = CacheManager(size=10)
    cache.put_category_list(1, None, ranking(1, "a"))
    assert len(cache) == 0 and cache.get_category_list(1, None, 1) is None
    disabled = CacheManager(size=0)
    disabled.put_category_list(1, "s1", ranking(1, "a"))
    assert disabled.get_category_list(1, "s1", 1) is None


def test_least_recently_used_entries_are_evicted() -> None:
    cache = CacheManager(size=2)
    cache.put_category_list(1, "a", ranking(1, "x"))
    cache.put_category_list(1, "b", ranking(1, "y"))
    assert cache.get_category_list(1, "a", 1) is not None  # a is now the most recent
    cache.put_category_list(1, "c", ranking(1, "z"))
    assert len(cache) == 2
    assert cache.get_category_list(1, "b", 1) is None
    assert cache.get_category_list(1, "a", 1) is not None and cache.get_category_list(1, "c", 1) is not None


def test_concurrent_use_stays_bounded() -> None:
    cache = CacheManager(size=50)

    def work(worker: int) -> None:
        for n in range(500):
            cache.put_category_list(n % 7, f"s{worker}-{n}", ranking(1, "a"))
            cache.get_category_list(n % 7, f"s{worker}-{n - 1}", 1)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(cache) == 50


class DictRedis:
    """The two calls the cache makes, on a dict (what a Redis server stores: bytes)."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.expiry: dict[str, int | None] = {}

    def get(self, name: str) -> Any:
        return self.data.get(name)

    def set(self, name: str, value: str, ex: int | None = None) -> Any:
        self.data[name] = value.encode()
        self.expiry[name] = ex
        return True


def test_redis_values_are_json_under_hashed_keys() -> None:
    redis = DictRedis()
    cache = CacheManager(size=0, redis_client=redis, ttl_seconds=600)
    cache.put_category_list(3, "../../etc/passwd", ranking(9, "a", "b"))
    [(key, raw)] = redis.data.items()
    assert key.startswith("rs:category-list:3:") and "/" not in key and "passwd" not in key
    assert json.loads(raw)["skus"] == ["a", "b"]  # plain JSON, never pickle
    assert redis.expiry[key] == 600
    assert cache.get_category_list(3, "../../etc/passwd", 9).skus == ("a", "b")
    assert cache.get_category_list(3, "../../etc/passwd", 10) is None


def test_a_broken_redis_is_a_miss_not_an_error() -> None:
    class Down:
        def get(self, name: str) -> Any:
            raise ConnectionError("redis down")

        def set(self, name: str, value: str, ex: int | None = None) -> Any:
            raise ConnectionError("redis down")

    cache = CacheManager(redis_client=Down())
    cache.put_category_list(1, "s1", ranking(1, "a"))
    assert cache.get_category_list(1, "s1", 1) is None


def test_processes_sharing_redis_show_a_session_the_same_ordering() -> None:
    redis = DictRedis()
    config = PipelineConfig(category_list_scoring_cascade=["selection"])
    # two processes (other random draws) with their own cache managers on one Redis
    first = Harness(catalog=_wide_catalog(), config=config, seed=1, cache=CacheManager(redis_client=redis))
    second = Harness(catalog=_wide_catalog(), config=config, seed=2, cache=CacheManager(redis_client=redis))
    ctx = RecommendationContext(page=Page.CATEGORY_LIST, category_id=1, session_id="s1")
    assert first.pipeline.recommend(ctx).skus == second.pipeline.recommend(ctx).skus
    other = RecommendationContext(page=Page.CATEGORY_LIST, category_id=1, session_id="s2")
    assert first.pipeline.recommend(other).skus != second.pipeline.recommend(
        RecommendationContext(page=Page.CATEGORY_LIST, category_id=1, session_id="s3")
    ).skus
