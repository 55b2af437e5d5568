"""The one dependency-injector container: the only place where concrete classes meet."""

from __future__ import annotations

from dependency_injector import containers, providers

from recommender_system.managers.cache import CacheManager
from recommender_system.managers.data import DataManager
from recommender_system.managers.model import ModelManager
from recommender_system.managers.monitoring import MonitoringManager
from recommender_system.managers.prediction_log import PredictionLogWriter
from recommender_system.managers.versions import VersionManager
from recommender_system.prediction.pipeline import PredictionPipeline
from recommender_system.settings import Settings
from recommender_system.storage.artefacts import ArtefactStore
from recommender_system.storage.catalog import CatalogStore
from recommender_system.storage.config_store import ConfigStore
from recommender_system.storage.database import Database
from recommender_system.storage.events import EventStore
from recommender_system.storage.history import HistoryStore
from recommender_system.storage.monitoring import MonitoringStore
from recommender_system.storage.prediction_log import PredictionLogStore
from recommender_system.storage.snapshot import SnapshotStore
from recommender_system.storage.training import TrainingStore


class Container(containers.DeclarativeContainer):
    wiring_config = containers.WiringConfiguration(packages=["recommender_system.api"])

    settings = providers.Singleton(Settings)
    database = providers.Singleton(Database, url=settings.provided.database_url)

    # --- stores (stateless; every method takes the unit-of-work Session) ---
    config_store = providers.Singleton(ConfigStore)
    training_store = providers.Singleton(TrainingStore)

    # --- ingestion: /store_object(s) and the demo loader ---
    catalog_store = providers.Singleton(CatalogStore)
    event_store = providers.Singleton(EventStore)
    data_manager = providers.Singleton(
        DataManager,
        database=database,
        catalog_store=catalog_store,
        event_store=event_store,
        config_store=config_store,
        training_store=training_store,
    )

    # --- trained model versions: artefact files, publish, prune, rollback ---
    artefact_store = providers.Singleton(ArtefactStore, root=settings.provided.artefact_dir)
    version_manager = providers.Singleton(
        VersionManager,
        database=database,
        training_store=training_store,
        artefact_store=artefact_store,
        keep_versions=settings.provided.keep_versions,
    )

    # --- predictions: serving state, category cache, pipeline, prediction log (issue 3) ---
    snapshot_store = providers.Singleton(SnapshotStore)
    history_store = providers.Singleton(
        HistoryStore, database=database, prepared=settings.provided.database_prepared_statements
    )
    prediction_log_store = providers.Singleton(PredictionLogStore)
    model_manager = providers.Singleton(
        ModelManager,
        database=database,
        config_store=config_store,
        snapshot_store=snapshot_store,
        training_store=training_store,
        artefact_store=artefact_store,
        refresh_seconds=settings.provided.refresh_seconds,
    )
    cache_manager = providers.Singleton(
        CacheManager, size=settings.provided.cache_size, redis_url=settings.provided.redis_url
    )
    prediction_log_writer = providers.Singleton(PredictionLogWriter, database=database, store=prediction_log_store)
    prediction_pipeline = providers.Singleton(
        PredictionPipeline,
        model_manager=model_manager,
        cache_manager=cache_manager,
        history_store=history_store,
        log_writer=prediction_log_writer,
    )

    # --- monitoring: dashboards, metrics aggregation (issue 5) ---
    monitoring_store = providers.Singleton(MonitoringStore)
    monitoring_manager = providers.Singleton(
        MonitoringManager,
        database=database,
        monitoring_store=monitoring_store,
        config_store=config_store,
        training_store=training_store,
    )
