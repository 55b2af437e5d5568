"""What a web process serves from: the config in force, the catalogue snapshot and one loaded instance per model.

Everything is held in one immutable ``ServingState`` that is swapped whole, so a request reads a consistent set
(config, catalogue and models of the same moment) with one attribute read and no lock. A background daemon
thread polls the data revisions every ``refresh_seconds`` (one query) and rebuilds only what changed: a new config
(and the untrained models that depend on it), a new snapshot when the catalogue changed (only fresh order counts
when the orders alone changed), a newly published model version. Nothing is loaded on the request path. A version
that fails to load is logged and the previous one keeps serving.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from recommender_system.domain import CatalogSnapshot, ModelVersion, Page, Phase, RecommendationContext
from recommender_system.prediction.config import PipelineConfig
from recommender_system.prediction.models import model_class
from recommender_system.prediction.models.base import PredictionModel
from recommender_system.prediction.models.popularity import PopularityModel
from recommender_system.prediction.models.registry import SPECS, TRAINABLE_MODEL_NAMES
from recommender_system.storage import revisions
from recommender_system.storage.config_store import ConfigStore
from recommender_system.storage.database import Database
from recommender_system.storage.snapshot import SnapshotStore

logger = logging.getLogger(__name__)

UNTRAINED_MODEL_NAMES: tuple[str, ...] = tuple(name for name, spec in SPECS.items() if not spec.trainable)
WATCHED_REVISIONS = (revisions.CATALOG, revisions.ORDERS, revisions.CONFIG, revisions.MODELS)
LOAD_RETRY_FIRST_SECONDS = 2.0
LOAD_RETRY_MAX_SECONDS = 300.0
"""A published version that fails to load (an artefact volume not mounted yet, a corrupt file) is tried again
after 2 s, then after twice as long each time, up to every 5 minutes, until it loads or another is published."""


@dataclass(frozen=True)
class _FailedLoad:
    version: str
    attempts: int
    retry_at: float


class VersionSource(Protocol):
    def current_versions(self, session: Any) -> dict[str, ModelVersion]: ...


class ArtefactDirectories(Protocol):
    def directory(self, model_name: str, version: str) -> Path: ...


@dataclass(frozen=True)
class ServingState:
    """One consistent view for serving; replaced whole, never mutated."""

    config: PipelineConfig
    catalog: CatalogSnapshot
    models: Mapping[str, PredictionModel]
    revisions: Mapping[str, int] = field(default_factory=dict)

    @property
    def catalog_revision(self) -> int:
        return int(self.revisions.get(revisions.CATALOG, 0))

    def usable(self, name: str) -> PredictionModel | None:
        """The loaded model of that name unless the config disables it."""
        if self.config.is_disabled(name):
            return None
        return self.models.get(name)


def untrained_models(config: PipelineConfig) -> dict[str, PredictionModel]:
    """A fresh instance of every model that needs no training, configured from ``config``."""
    models: dict[str, PredictionModel] = {}
    for name in UNTRAINED_MODEL_NAMES:
        if name == PopularityModel.name:
            models[name] = PopularityModel(config=config.popularity_config)
        else:
            models[name] = model_class(name)()
    return models


def initial_state() -> ServingState:
    """The state before the first refresh: defaults and an empty catalogue (only the dummy model answers)."""
    config = PipelineConfig()
    return ServingState(config=config, catalog=CatalogSnapshot.empty(), models=untrained_models(config))


class ModelManager:
    def __init__(
        self,
        database: Database,
        config_store: ConfigStore,
        snapshot_store: SnapshotStore,
        training_store: VersionSource | None = None,
        artefact_store: ArtefactDirectories | None = None,
        refresh_seconds: float = 2.0,
    ) -> None:
        self._database = database
        self._config_store = config_store
        self._snapshot_store = snapshot_store
        self._training_store = training_store
        self._artefact_store = artefact_store
        self.refresh_seconds = refresh_seconds
        self._state = initial_state()
        self._loaded_versions: dict[str, str] = {}
        self._refreshed = False
        self._refresh_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False
        self._versions_failing = False
        self._failed_loads: dict[str, _FailedLoad] = {}
        self._clock = time.monotonic

    # --- serving ----------------------------------------------------------------------------------------------
    @property
    def state(self) -> ServingState:
        return self._state

    def serve(self, state: ServingState) -> None:
        """Serve ``state`` as given (tests and tools); the next refresh reloads everything from the database."""
        with self._refresh_lock:
            self._state = state
            self._refreshed = False

    def chain(
        self, ctx: RecommendationContext, phase: Phase, state: ServingState | None = None
    ) -> Iterator[PredictionModel]:
        """The models able and ready to do ``phase`` for this request, in cascade order; dummy last.

        Category lists have no retrieval model (their candidates are the category's variants): nothing is yielded.
        """
        state = state or self._state
        if phase is Phase.RETRIEVAL and ctx.page is Page.CATEGORY_LIST:
            return
        yielded_dummy = False
        for name in state.config.cascade(ctx.page, phase):
            model = state.usable(name)
            if model is None or not model.can(phase, ctx.page):
                continue
            try:
                ready = model.is_ready(ctx, state.catalog)
            except Exception:  # noqa: BLE001 - a faulty model is skipped, never a 500
                logger.exception("%s.is_ready failed; skipping it", name)
                continue
            if ready:
                yielded_dummy = yielded_dummy or name == "dummy"
                yield model
        if not yielded_dummy:
            yield state.models["dummy"]

    def pick(
        self, ctx: RecommendationContext, phase: Phase, state: ServingState | None = None
    ) -> PredictionModel | None:
        """The first model of the cascade that is enabled, able and ready (dummy as the last resort)."""
        return next(self.chain(ctx, phase, state), None)

    # --- refreshing -------------------------------------------------------------------------------------------
    def refresh(self) -> bool:
        """Poll the revisions (one query) and rebuild what changed; True when the state was replaced.

        Database errors propagate (the state is unchanged); a model that fails to load is logged and skipped.
        """
        with self._refresh_lock:
            previous = self._state
            with self._database.session() as session:
                current = revisions.read_all(session)
                changed = {
                    name
                    for name in WATCHED_REVISIONS
                    if not self._refreshed or current.get(name) != previous.revisions.get(name)
                }
                retry = self._load_retry_due()
                if not changed and not retry:
                    return False
                config = self._config_store.latest(session) if revisions.CONFIG in changed else previous.config
                half_life = config.popularity_config.half_life_days
                if revisions.CATALOG in changed:
                    catalog = self._snapshot_store.build(session, half_life)
                elif revisions.ORDERS in changed or half_life != previous.config.popularity_config.half_life_days:
                    catalog = self._snapshot_store.with_orders(session, previous.catalog, half_life)
                else:
                    catalog = previous.catalog
            versions = self._current_versions() if revisions.MODELS in changed or retry else None

            current = dict(current)
            if revisions.MODELS in changed and versions is None:
                # not read: leave the models revision unseen so that the next poll tries again
                current[revisions.MODELS] = previous.revisions.get(revisions.MODELS, -1)
            models = dict(previous.models)
            if revisions.CONFIG in changed:
                models.update(untrained_models(config))
            if versions is not None:
                self._load_versions(models, versions)
            self._state = ServingState(config=config, catalog=catalog, models=models, revisions=current)
            self._refreshed = True
            level = logging.DEBUG if changed <= {revisions.ORDERS} else logging.INFO  # orders change all the time
            what = f"{', '.join(sorted(changed))} changed" if changed else "a failed model load retried"
            logger.log(level, "serving state refreshed (%s)", what)
            return True

    def _current_versions(self) -> dict[str, ModelVersion] | None:
        """The published versions (own unit of work, so that a failure cannot spoil the refresh's reads)."""
        if self._training_store is None:
            return {}
        try:
            with self._database.session() as session:
                versions = dict(self._training_store.current_versions(session))
        except Exception:  # noqa: BLE001 - without versions, keep serving what is loaded
            if not self._versions_failing:
                logger.exception("reading the current model versions failed; keeping the loaded ones")
            self._versions_failing = True
            return None
        self._versions_failing = False
        return versions

    def _load_versions(self, models: dict[str, PredictionModel], versions: Mapping[str, ModelVersion]) -> None:
        """Load the published versions that differ from the loaded ones; unload models without a version."""
        for name in TRAINABLE_MODEL_NAMES:
            published = versions.get(name)
            if published is None:
                if models.pop(name, None) is not None:
                    logger.info("%s has no published version any more; unloaded", name)
                self._loaded_versions.pop(name, None)
                self._failed_loads.pop(name, None)
                continue
            if self._loaded_versions.get(name) == published.version and name in models:
                continue
            failed = self._failed_loads.get(name)
            if failed is not None and failed.version == published.version and failed.retry_at > self._clock():
                continue  # not due again yet
            try:
                directory = self._artefact_directory(name, published)
                models[name] = model_class(name).load(directory, published.version)
            except Exception as error:  # noqa: BLE001 - the previous version (if any) keeps serving
                self._record_failed_load(name, published.version, failed, error)
                continue
            self._failed_loads.pop(name, None)
            self._loaded_versions[name] = published.version
            logger.info("loaded %s version %s", name, published.version)

    def _record_failed_load(self, name: str, version: str, failed: _FailedLoad | None, error: Exception) -> None:
        attempts = failed.attempts + 1 if failed is not None and failed.version == version else 1
        delay = min(LOAD_RETRY_FIRST_SECONDS * 2 ** (attempts - 1), LOAD_RETRY_MAX_SECONDS)
        self._failed_loads[name] = _FailedLoad(version, attempts, self._clock() + delay)
        if attempts == 1:
            logger.exception(
                "loading %s version %s failed; keeping the previous one, trying again in %.0f s", name, version, delay
            )
        else:  # the traceback was logged at the first failure
            logger.warning(
                "loading %s version %s failed again (attempt %d: %s); trying again in %.0f s",
                name,
                version,
                attempts,
                error,
                delay,
            )

    def _load_retry_due(self) -> bool:
        now = self._clock()
        return any(failed.retry_at <= now for failed in self._failed_loads.values())

    def _artefact_directory(self, name: str, published: ModelVersion) -> Path:
        """Where to load a version from: checked against its manifest when the store can verify (a corrupt or
        half-written artefact then fails to load instead of serving garbage)."""
        store = self._artefact_store
        if store is None:
            return Path(published.path)
        verified = getattr(store, "verified_directory", None)
        if verified is not None:
            return Path(verified(name, published.version))
        return Path(store.directory(name, published.version))

    def start(self) -> None:
        """Refresh once now (errors logged, not raised) and keep refreshing in a daemon thread (idempotent)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._refresh_quietly()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="model-manager-refresh", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        """Whether the background refresher is running."""
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.wait(self.refresh_seconds):
            self._refresh_quietly()

    def _refresh_quietly(self) -> None:
        try:
            self.refresh()
        except Exception:  # noqa: BLE001 - keep serving the previous state; retry at the next poll
            if not self._failing:
                logger.exception("refreshing the serving state failed; serving the previous one")
            self._failing = True
            return
        if self._failing:
            logger.info("refreshing the serving state works again")
        self._failing = False
