"""Training jobs, runs and published model versions (the trainer's queue and the versions web processes serve)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from recommender_system.storage.tables import TrainingJob, utcnow


class TrainingStore:
    def request_job(self, session: Session, model_name: str, reason: str = "requested") -> int:
        """Queue a training of ``model_name``; a request for a model that already has a pending job coalesces onto
        it. Returns the pending job's id."""
        existing = session.scalar(
            select(TrainingJob.id).where(TrainingJob.model_name == model_name, TrainingJob.status == "pending")
        )
        if existing is not None:
            return existing
        job = TrainingJob(model_name=model_name, reason=reason, status="pending", created_at=utcnow(), available_at=utcnow())
        nested = session.begin_nested()
        try:
            session.add(job)
            session.flush()
            nested.commit()
        except Exception:  # a concurrent request created the pending job first (unique partial index)
            nested.rollback()
            existing = session.scalar(
                select(TrainingJob.id).where(TrainingJob.model_name == model_name, TrainingJob.status == "pending")
            )
            if existing is None:
                raise
            return existing
        return job.id
