"""Deployment settings, read once from ``RS_*`` environment variables and validated at start-up."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_VAR_DIR = Path("var")


def usable_cpus() -> int | None:
    """The CPUs this process may run on (a container's cpuset, not the host's count, where the OS says)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count()


def default_web_workers(cpus: int | None) -> int:
    """Two worker processes per CPU, 2 to 8: a prediction is CPU-bound Python, so processes (not threads) give
    parallelism, and the second per CPU keeps it busy while the other waits for the database."""
    return min(max(2 * (cpus or 1), 2), 8)


class Settings(BaseSettings):
    """Static values of one deployment. Runtime (dashboard-editable) values live in ``PipelineConfig``."""

    model_config = SettingsConfigDict(env_prefix="RS_", extra="ignore")

    database_url: str = Field(
        default=f"sqlite:///{DEFAULT_VAR_DIR / 'recommender.db'}",
        description="SQLAlchemy URL; the default is an embedded SQLite file under ./var/",
    )
    database_prepared_statements: bool = Field(
        default=True,
        description="PostgreSQL: prepare the per-prediction query once per connection; false behind PgBouncer's "
        "transaction pooling",
    )
    artefact_dir: Path = Field(default=DEFAULT_VAR_DIR / "artefacts")
    server_host: str = "0.0.0.0"
    server_port: int = Field(default=8086, ge=1, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    api_token: str | None = Field(default=None, description="when set, every route but GET / needs a Bearer token")
    web_worker_class: Literal["sync", "gthread"] = Field(
        default="sync",
        description="gunicorn worker class: sync (one request at a time per process, no keep-alive) or gthread",
    )
    web_workers: int = Field(default_factory=lambda: default_web_workers(usable_cpus()), ge=1, le=64)
    web_threads: int = Field(default=4, ge=1, le=256, description="threads per worker (gthread only)")
    refresh_seconds: float = Field(
        default=2.0,
        gt=0,
        le=300,
        description="how often a web process looks for a new config, catalogue or model",
    )
    cache_size: int = Field(default=10_000, ge=0, description="bounded per-process cache of category orderings")
    redis_url: str | None = Field(default=None, description="shared cache when scaled out (optional)")
    trainer_poll_seconds: float = Field(default=5.0, gt=0, le=3600)
    keep_versions: int = Field(default=3, ge=1, le=100, description="model versions kept on disk per model")
    prometheus_multiproc_dir: Path | None = Field(default=None)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("api_token", "redis_url", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("database_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not (value.startswith("sqlite") or value.startswith("postgresql")):
            raise ValueError("RS_DATABASE_URL must be a sqlite:// or postgresql:// URL")
        return value

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")
