"""Apply the Alembic migrations (idempotent) and check whether a database is at head."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def alembic_config(database_url: str) -> Config:
    ini = PROJECT_ROOT / "alembic.ini"
    if not ini.exists():  # installed without the source tree: look in the working directory
        ini = Path.cwd() / "alembic.ini"
    if not ini.exists():
        raise FileNotFoundError(
            "alembic.ini and migrations/ not found next to the package or in the working directory"
        )
    config = Config(str(ini))
    config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(database_url), revision)


def head_revision(database_url: str) -> str | None:
    return ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def is_migrated(engine: Engine, database_url: str) -> bool:
    return current_revision(engine) == head_revision(database_url)
