"""The one dependency-injector container: the only place where concrete classes meet."""

from __future__ import annotations

from dependency_injector import containers, providers

from recommender_system.settings import Settings
from recommender_system.storage.config_store import ConfigStore
from recommender_system.storage.database import Database
from recommender_system.storage.training import TrainingStore


class Container(containers.DeclarativeContainer):
    wiring_config = containers.WiringConfiguration(packages=["recommender_system.api"])

    settings = providers.Singleton(Settings)
    database = providers.Singleton(Database, url=settings.provided.database_url)

    # --- stores (stateless; every method takes the unit-of-work Session) ---
    config_store = providers.Singleton(ConfigStore)
    training_store = providers.Singleton(TrainingStore)
