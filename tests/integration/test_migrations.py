"""The Alembic migrations build exactly the tables of ``storage/tables.py``, and step down and up again."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from recommender_system.storage import migrate
from recommender_system.storage.tables import Base


def differences(url: str) -> list[object]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return list(compare_metadata(MigrationContext.configure(connection), Base.metadata))
    finally:
        engine.dispose()


def foreign_keys(url: str, table: str) -> list[str | None]:
    engine = sa.create_engine(url)
    try:
        return [key["name"] for key in sa.inspect(engine).get_foreign_keys(table)]
    finally:
        engine.dispose()


def test_the_migrated_schema_is_the_declared_one(database_url: str) -> None:
    assert differences(database_url) == []
    assert foreign_keys(database_url, "prediction_log_item") == []  # checked per row, it cost more than predicting


def test_0002_steps_down_and_up(database_url: str) -> None:
    config = migrate.alembic_config(database_url)
    command.downgrade(config, "0001")
    try:
        assert foreign_keys(database_url, "prediction_log_item") == [
            "fk_prediction_log_item_prediction_id_prediction_log"
        ]
    finally:
        command.upgrade(config, "head")
    assert differences(database_url) == []
