"""A bounded cache that keeps a session's category-list ordering stable across its page views.

Keyed by (category id, session id) and tagged with the catalogue revision it was computed at: an entry of an older
revision is a miss, so a catalogue change (stock, publishing, membership) re-ranks. In-process it is a thread-safe
LRU of ``size`` entries; with ``redis_url`` it is shared by every process through Redis, stored as JSON (never
pickle) under a hashed key with a time to live. Anonymous requests (no session) are never cached.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CachedRanking:
    """A category's final ordering (SKUs best first) and the models that produced it.

    ``revision`` is the catalogue revision it was computed at. In-process entries also keep the catalogue
    ``indices`` and the ``layout`` (the snapshot's SKU array) they index, so a hit on a snapshot with that same
    layout needs no SKU lookups; Redis entries hold the SKUs only.
    """

    revision: int
    skus: tuple[str, ...]
    model_name: str
    model_identifier: str
    retrieval_model: str = ""
    retrieval_identifier: str = ""
    indices: np.ndarray | None = field(default=None, compare=False)
    layout: np.ndarray | None = field(default=None, compare=False, repr=False)

    def to_json(self) -> str:
        return json.dumps(
            {
                "revision": self.revision,
                "skus": list(self.skus),
                "model_name": self.model_name,
                "model_identifier": self.model_identifier,
                "retrieval_model": self.retrieval_model,
                "retrieval_identifier": self.retrieval_identifier,
            }
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> CachedRanking:
        data = json.loads(raw)
        return cls(
            revision=int(data["revision"]),
            skus=tuple(str(sku) for sku in data["skus"]),
            model_name=str(data["model_name"]),
            model_identifier=str(data["model_identifier"]),
            retrieval_model=str(data.get("retrieval_model", "")),
            retrieval_identifier=str(data.get("retrieval_identifier", "")),
        )


class RedisLike(Protocol):
    def get(self, name: str) -> Any: ...

    def set(self, name: str, value: str, ex: int | None = None) -> Any: ...


class CacheManager:
    def __init__(
        self,
        size: int = 10_000,
        redis_url: str | None = None,
        ttl_seconds: int = 86_400,
        redis_client: RedisLike | None = None,
    ) -> None:
        self.size = size
        self.ttl_seconds = ttl_seconds
        self._entries: OrderedDict[tuple[int, str], CachedRanking] = OrderedDict()
        self._lock = threading.Lock()
        self._redis = redis_client
        if self._redis is None and redis_url:
            import redis

            self._redis = redis.Redis.from_url(redis_url, socket_timeout=0.05, socket_connect_timeout=0.2)

    @property
    def enabled(self) -> bool:
        return self._redis is not None or self.size > 0

    @staticmethod
    def redis_key(category_id: int, session_id: str) -> str:
        digest = hashlib.sha256(session_id.encode()).hexdigest()[:32]
        return f"rs:category-list:{int(category_id)}:{digest}"

    def get_category_list(self, category_id: int, session_id: str | None, revision: int) -> CachedRanking | None:
        """The ordering cached for this session and category at this catalogue revision, if any."""
        if not session_id or not self.enabled:
            return None
        if self._redis is not None:
            try:
                raw = self._redis.get(self.redis_key(category_id, session_id))
                found = CachedRanking.from_json(raw) if raw else None
            except Exception:  # noqa: BLE001 - a cache failure is a miss, never an error
                logger.warning("category cache: redis read failed", exc_info=True)
                return None
        else:
            key = (int(category_id), session_id)
            with self._lock:
                found = self._entries.get(key)
                if found is not None:
                    self._entries.move_to_end(key)
        if found is None or found.revision != revision:
            return None
        return found

    def put_category_list(self, category_id: int, session_id: str | None, ranking: CachedRanking) -> None:
        if not session_id or not self.enabled:
            return
        if self._redis is not None:
            try:
                self._redis.set(self.redis_key(category_id, session_id), ranking.to_json(), ex=self.ttl_seconds)
            except Exception:  # noqa: BLE001
                logger.warning("category cache: redis write failed", exc_info=True)
            return
        key = (int(category_id), session_id)
        with self._lock:
            self._entries[key] = ranking
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
