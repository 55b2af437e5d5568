"""Versions of the runtime configuration (``PipelineConfig``): save a new one, read the newest."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from recommender_system.prediction.config import PipelineConfig
from recommender_system.storage import revisions
from recommender_system.storage.tables import ConfigVersion, utcnow


class ConfigStore:
    def save(self, session: Session, config: PipelineConfig) -> int:
        row = ConfigVersion(body=config.to_storage(), created_at=utcnow())
        session.add(row)
        session.flush()
        revisions.bump(session, revisions.CONFIG)
        return row.id

    def latest(self, session: Session) -> PipelineConfig:
        """The newest saved config (greatest id); the defaults when none was ever saved."""
        body = session.scalar(select(ConfigVersion.body).order_by(ConfigVersion.id.desc()).limit(1))
        return PipelineConfig() if body is None else PipelineConfig.model_validate(body)
