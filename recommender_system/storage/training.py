"""Training jobs, runs and published model versions (the trainer's queue and the versions web processes serve).

The queue (``training_job``):

- ``request_job`` adds a pending job; requests for a model that already has one coalesce onto it (a partial
  unique index guarantees at most one pending job per model, even under concurrent requests).
- ``claim_next`` hands the oldest due job to one trainer. On PostgreSQL the candidate row is read with
  ``SELECT ... FOR UPDATE SKIP LOCKED``; on both backends the claim itself is a conditional
  ``UPDATE ... WHERE status = 'pending'`` that only one claimant can win (call it inside
  ``Database.write_session()``, whose ``BEGIN IMMEDIATE`` serialises SQLite writers). A model whose previous job
  is still running is not claimed again, so two trainers never train the same model at once.
- ``claimed_at`` is the claim's lease: the trainer renews it (``heartbeat``) while it works, and
  ``requeue_stale`` puts back the running jobs of a trainer that stopped renewing it (it died).
- ``fail_job`` retries with exponential back-off (the job goes back to pending with ``available_at`` in the
  future) until ``max_attempts`` claims were used; then it stays ``failed`` with its error.

Versions: ``record_version`` stores a published artefact, ``set_current`` makes a version the served one
(publish and rollback), ``current_versions`` is what web processes load. Every change of the served set bumps the
``models`` revision that web processes poll.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, exists, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from recommender_system.domain import ModelVersion
from recommender_system.storage import revisions
from recommender_system.storage.tables import CurrentModel, ModelVersionRow, TrainingJob, TrainingRun, utcnow

logger = logging.getLogger(__name__)

PENDING = "pending"
RUNNING = "running"
DONE = "done"
FAILED = "failed"

RUN_RUNNING = "running"
RUN_COMPLETED = "completed"
RUN_FAILED = "failed"

ERROR_LIMIT = 20_000


@dataclass(frozen=True)
class RetryPolicy:
    """How failed jobs are retried: ``max_attempts`` claims in all, waiting ``base_seconds * 2**(n-1)`` (at most
    ``max_seconds``) after the n-th failure."""

    max_attempts: int = 4
    base_seconds: float = 60.0
    max_seconds: float = 3600.0

    def delay(self, attempts: int) -> timedelta:
        seconds = self.base_seconds * (2 ** max(0, attempts - 1))
        return timedelta(seconds=min(seconds, self.max_seconds))


@dataclass(frozen=True)
class ClaimedJob:
    id: int
    model_name: str
    reason: str
    attempts: int
    claimed_by: str


@dataclass(frozen=True)
class JobInfo:
    id: int
    model_name: str
    reason: str
    status: str
    attempts: int
    available_at: datetime
    claimed_by: str | None
    claimed_at: datetime | None
    finished_at: datetime | None
    error: str | None
    created_at: datetime


@dataclass(frozen=True)
class RunInfo:
    id: int
    job_id: int | None
    model_name: str
    version: str | None
    status: str
    started_at: datetime
    finished_at: datetime | None
    duration: float | None
    peak_memory_mb: float | None
    peak_memory_percentage: float | None
    hyperparameters: dict[str, Any]
    metrics: dict[str, Any]
    error: str | None


@dataclass(frozen=True)
class StoredVersion:
    """A recorded model version (``removed`` once its files were pruned)."""

    model_name: str
    version: str
    path: str
    created_at: datetime
    run_id: int | None
    removed: bool
    manifest: dict[str, Any] = field(default_factory=dict)

    def as_model_version(self) -> ModelVersion:
        return ModelVersion(self.model_name, self.version, self.path, self.created_at)


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def _truncate(text: str | None) -> str | None:
    if text is None or len(text) <= ERROR_LIMIT:
        return text
    return text[: ERROR_LIMIT // 2] + "\n...\n" + text[-ERROR_LIMIT // 2 :]


def _job_info(job: TrainingJob) -> JobInfo:
    return JobInfo(
        job.id,
        job.model_name,
        job.reason,
        job.status,
        job.attempts,
        job.available_at,
        job.claimed_by,
        job.claimed_at,
        job.finished_at,
        job.error,
        job.created_at,
    )


def _run_info(run: TrainingRun) -> RunInfo:
    return RunInfo(
        run.id,
        run.job_id,
        run.model_name,
        run.version,
        run.status,
        run.started_at,
        run.finished_at,
        run.duration,
        run.peak_memory_mb,
        run.peak_memory_percentage,
        dict(run.hyperparameters or {}),
        dict(run.metrics or {}),
        run.error,
    )


def _stored_version(row: ModelVersionRow) -> StoredVersion:
    return StoredVersion(
        row.model_name, row.version, row.path, row.created_at, row.run_id, row.removed, dict(row.manifest or {})
    )


def _bump_models(session: Session) -> None:
    """Bump the ``models`` revision; when two publishers create its row at the same moment, retry as an update."""
    for attempt in range(2):
        nested = session.begin_nested()
        try:
            revisions.bump(session, revisions.MODELS)
            nested.commit()
            return
        except IntegrityError:
            nested.rollback()
            if attempt:
                raise


class TrainingStore:
    """Stateless; every method works inside the caller's unit of work."""

    # --- the queue --------------------------------------------------------------------------------------------
    def request_job(self, session: Session, model_name: str, reason: str = "requested") -> int:
        """Queue a training of ``model_name``; a request for a model that already has a pending job coalesces onto
        it. Returns the pending job's id."""
        existing = self._pending_id(session, model_name)
        if existing is not None:
            return existing
        now = utcnow()
        job = TrainingJob(model_name=model_name, reason=reason[:200], status=PENDING, created_at=now, available_at=now)
        nested = session.begin_nested()
        try:
            session.add(job)
            session.flush()
            nested.commit()
        except IntegrityError:  # a concurrent request created the pending job first (unique partial index)
            nested.rollback()
            existing = self._pending_id(session, model_name)
            if existing is None:
                raise
            return existing
        return job.id

    def _pending_id(self, session: Session, model_name: str) -> int | None:
        return session.scalar(
            select(TrainingJob.id).where(TrainingJob.model_name == model_name, TrainingJob.status == PENDING)
        )

    def claim_next(self, session: Session, worker: str, now: datetime | None = None) -> ClaimedJob | None:
        """Claim the oldest due pending job for ``worker`` (``None`` when nothing is due).

        Safe against concurrent claimants: PostgreSQL skips rows another transaction holds (``FOR UPDATE SKIP
        LOCKED``) and on every backend the state change is ``UPDATE ... WHERE status = 'pending'``, which only one
        transaction can win. On SQLite call it inside ``Database.write_session()``. Each claim counts one attempt.
        """
        now = now or utcnow()
        running = aliased(TrainingJob)
        busy_model = exists().where(and_(running.model_name == TrainingJob.model_name, running.status == RUNNING))
        query = (
            select(TrainingJob.id)
            .where(TrainingJob.status == PENDING, TrainingJob.available_at <= now, ~busy_model)
            .order_by(TrainingJob.available_at, TrainingJob.id)
            .limit(1)
        )
        if _dialect(session) == "postgresql":
            query = query.with_for_update(skip_locked=True, of=TrainingJob)
        for _ in range(3):  # lost races (another claimant won the row) are retried a few times
            job_id = session.scalar(query)
            if job_id is None:
                return None
            result = session.execute(
                update(TrainingJob)
                .where(TrainingJob.id == job_id, TrainingJob.status == PENDING)
                .values(
                    status=RUNNING,
                    attempts=TrainingJob.attempts + 1,
                    claimed_by=worker[:200],
                    claimed_at=now,
                )
                .execution_options(synchronize_session=False)
            )
            if result.rowcount == 1:  # type: ignore[attr-defined]
                job = session.get(TrainingJob, job_id, populate_existing=True)
                assert job is not None
                return ClaimedJob(job.id, job.model_name, job.reason, job.attempts, worker)
        return None

    def heartbeat(self, session: Session, job_id: int, worker: str) -> bool:
        """Renew the lease of a running job; False when the job is no longer this worker's (it was requeued)."""
        result = session.execute(
            update(TrainingJob)
            .where(TrainingJob.id == job_id, TrainingJob.status == RUNNING, TrainingJob.claimed_by == worker[:200])
            .values(claimed_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        return result.rowcount == 1  # type: ignore[attr-defined]

    def finish_job(self, session: Session, job_id: int, worker: str | None = None) -> bool:
        """Mark a running job done (only if ``worker`` still holds its claim, when given)."""
        query = update(TrainingJob).where(TrainingJob.id == job_id, TrainingJob.status == RUNNING)
        if worker is not None:
            query = query.where(TrainingJob.claimed_by == worker[:200])
        result = session.execute(
            query.values(status=DONE, finished_at=utcnow(), error=None).execution_options(synchronize_session=False)
        )
        return result.rowcount == 1  # type: ignore[attr-defined]

    def fail_job(
        self,
        session: Session,
        job_id: int,
        error: str,
        policy: RetryPolicy | None = None,
        worker: str | None = None,
    ) -> int | None:
        """Record a failure of a running job. Retried with back-off while attempts remain: returns the id of the
        pending job that will retry it (this one, or the pending job of the same model it was merged into), else
        ``None`` (the job stays ``failed``). With ``worker``, a job whose claim another trainer took over is left
        alone (``None``)."""
        policy = policy or RetryPolicy()
        job = session.get(TrainingJob, job_id, populate_existing=True)
        if job is None:
            raise LookupError(f"no training job {job_id}")
        if job.status != RUNNING or (worker is not None and job.claimed_by != worker[:200]):
            return None
        now = utcnow()
        if job.attempts >= policy.max_attempts:
            job.status, job.finished_at, job.error = FAILED, now, _truncate(error)
            session.flush()
            return None
        return self._back_to_pending(session, job, now + policy.delay(job.attempts), error)

    def release_job(self, session: Session, job_id: int, note: str, worker: str | None = None) -> int | None:
        """Give a claimed job back untried (the trainer is stopping): pending again at once, the attempt refunded."""
        job = session.get(TrainingJob, job_id, populate_existing=True)
        if job is None or job.status != RUNNING or (worker is not None and job.claimed_by != worker[:200]):
            return None
        job.attempts = max(0, job.attempts - 1)
        return self._back_to_pending(session, job, utcnow(), note)

    def _back_to_pending(self, session: Session, job: TrainingJob, available_at: datetime, error: str) -> int:
        """Make ``job`` pending again; when the model got another pending job meanwhile, merge into that one."""
        nested = session.begin_nested()
        try:
            job.status, job.available_at, job.error = PENDING, available_at, _truncate(error)
            job.claimed_by, job.finished_at = None, None
            session.flush()
            nested.commit()
            return job.id
        except IntegrityError:
            nested.rollback()
        job = session.get(TrainingJob, job.id, populate_existing=True)  # type: ignore[assignment]
        other = session.scalar(
            select(TrainingJob).where(TrainingJob.model_name == job.model_name, TrainingJob.status == PENDING)
        )
        assert other is not None, "the unique pending index was violated by a job that no longer exists"
        job.status, job.finished_at = FAILED, utcnow()
        job.error = _truncate(f"{error}\n(retry merged into pending job {other.id})")
        other.available_at = max(other.available_at, available_at)
        other.attempts = max(other.attempts, job.attempts)
        session.flush()
        return other.id

    def requeue_stale(self, session: Session, lease_seconds: float, policy: RetryPolicy | None = None) -> list[int]:
        """Put back the running jobs whose lease expired (their trainer died), and fail their open runs.

        A job whose attempts are used up stays failed, so a job that kills its trainer cannot loop forever.
        """
        policy = policy or RetryPolicy()
        now = utcnow()
        cutoff = now - timedelta(seconds=lease_seconds)
        stale = session.scalars(
            select(TrainingJob)
            .where(TrainingJob.status == RUNNING, TrainingJob.claimed_at < cutoff)
            .order_by(TrainingJob.id)
            .with_for_update(skip_locked=True)
        ).all()
        requeued = []
        for job in stale:
            error = f"trainer {job.claimed_by} stopped renewing its claim (last at {job.claimed_at:%Y-%m-%d %H:%M:%S})"
            logger.warning("training job %d (%s): %s", job.id, job.model_name, error)
            session.execute(
                update(TrainingRun)
                .where(TrainingRun.job_id == job.id, TrainingRun.status == RUN_RUNNING)
                .values(status=RUN_FAILED, finished_at=now, error=error)
                .execution_options(synchronize_session=False)
            )
            if job.attempts >= policy.max_attempts:
                job.status, job.finished_at, job.error = FAILED, now, error
                session.flush()
                continue
            requeued.append(self._back_to_pending(session, job, now + policy.delay(job.attempts), error))
        return requeued

    def job(self, session: Session, job_id: int) -> JobInfo | None:
        job = session.get(TrainingJob, job_id, populate_existing=True)
        return None if job is None else _job_info(job)

    def jobs(self, session: Session, model_name: str | None = None, status: str | None = None) -> list[JobInfo]:
        """Jobs, oldest first, optionally of one model and/or status."""
        query = select(TrainingJob).order_by(TrainingJob.id)
        if model_name is not None:
            query = query.where(TrainingJob.model_name == model_name)
        if status is not None:
            query = query.where(TrainingJob.status == status)
        return [_job_info(job) for job in session.scalars(query)]

    def open_job_models(self, session: Session) -> set[str]:
        """Models with a pending or running job."""
        return set(
            session.scalars(select(TrainingJob.model_name).where(TrainingJob.status.in_((PENDING, RUNNING))).distinct())
        )

    def last_finished_job(self, session: Session, model_name: str) -> JobInfo | None:
        job = session.scalar(
            select(TrainingJob)
            .where(TrainingJob.model_name == model_name, TrainingJob.status.in_((DONE, FAILED)))
            .order_by(TrainingJob.finished_at.desc(), TrainingJob.id.desc())
            .limit(1)
        )
        return None if job is None else _job_info(job)

    # --- runs -------------------------------------------------------------------------------------------------
    def start_run(
        self,
        session: Session,
        model_name: str,
        job_id: int | None = None,
        hyperparameters: Mapping[str, Any] | None = None,
    ) -> int:
        run = TrainingRun(
            job_id=job_id,
            model_name=model_name,
            status=RUN_RUNNING,
            started_at=utcnow(),
            hyperparameters=dict(hyperparameters or {}),
            metrics={},
        )
        session.add(run)
        session.flush()
        return run.id

    def finish_run(
        self,
        session: Session,
        run_id: int,
        *,
        version: str | None,
        duration: float,
        peak_memory_mb: float | None,
        peak_memory_percentage: float | None,
        hyperparameters: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
    ) -> None:
        values: dict[str, Any] = {
            "status": RUN_COMPLETED,
            "version": version,
            "finished_at": utcnow(),
            "duration": duration,
            "peak_memory_mb": peak_memory_mb,
            "peak_memory_percentage": peak_memory_percentage,
            "metrics": dict(metrics or {}),
            "error": None,
        }
        if hyperparameters is not None:
            values["hyperparameters"] = dict(hyperparameters)
        session.execute(
            update(TrainingRun)
            .where(TrainingRun.id == run_id)
            .values(**values)
            .execution_options(synchronize_session=False)
        )

    def fail_run(
        self,
        session: Session,
        run_id: int,
        *,
        error: str,
        duration: float | None = None,
        peak_memory_mb: float | None = None,
        peak_memory_percentage: float | None = None,
    ) -> None:
        session.execute(
            update(TrainingRun)
            .where(TrainingRun.id == run_id)
            .values(
                status=RUN_FAILED,
                finished_at=utcnow(),
                duration=duration,
                peak_memory_mb=peak_memory_mb,
                peak_memory_percentage=peak_memory_percentage,
                error=_truncate(error),
            )
            .execution_options(synchronize_session=False)
        )

    def runs(
        self,
        session: Session,
        model_name: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[RunInfo]:
        """Runs started in ``[since, until)``, oldest first, optionally of one model."""
        query = select(TrainingRun).order_by(TrainingRun.started_at, TrainingRun.id)
        if model_name is not None:
            query = query.where(TrainingRun.model_name == model_name)
        if since is not None:
            query = query.where(TrainingRun.started_at >= since)
        if until is not None:
            query = query.where(TrainingRun.started_at < until)
        return [_run_info(run) for run in session.scalars(query)]

    # --- versions ---------------------------------------------------------------------------------------------
    def record_version(
        self,
        session: Session,
        model_name: str,
        version: str,
        path: str,
        *,
        run_id: int | None = None,
        manifest: Mapping[str, Any] | None = None,
    ) -> StoredVersion:
        row = ModelVersionRow(
            model_name=model_name,
            version=version,
            path=path,
            run_id=run_id,
            manifest=dict(manifest or {}),
            removed=False,
            created_at=utcnow(),
        )
        session.add(row)
        session.flush()
        return _stored_version(row)

    def versions(self, session: Session, model_name: str, include_removed: bool = False) -> list[StoredVersion]:
        """Recorded versions of a model, newest first."""
        query = (
            select(ModelVersionRow)
            .where(ModelVersionRow.model_name == model_name)
            .order_by(ModelVersionRow.created_at.desc(), ModelVersionRow.id.desc())
        )
        if not include_removed:
            query = query.where(ModelVersionRow.removed.is_(False))
        return [_stored_version(row) for row in session.scalars(query)]

    def version(self, session: Session, model_name: str, version: str) -> StoredVersion | None:
        row = session.scalar(
            select(ModelVersionRow).where(ModelVersionRow.model_name == model_name, ModelVersionRow.version == version)
        )
        return None if row is None else _stored_version(row)

    def newest_version(self, session: Session, model_name: str) -> StoredVersion | None:
        """The most recently recorded version (whether or not it is current: a rollback does not change it)."""
        row = session.scalar(
            select(ModelVersionRow)
            .where(ModelVersionRow.model_name == model_name)
            .order_by(ModelVersionRow.created_at.desc(), ModelVersionRow.id.desc())
            .limit(1)
        )
        return None if row is None else _stored_version(row)

    def current_version(self, session: Session, model_name: str) -> str | None:
        return session.scalar(select(CurrentModel.version).where(CurrentModel.model_name == model_name))

    def current_versions(self, session: Session) -> dict[str, ModelVersion]:
        """The served version of every trained model, by model name (what web processes load)."""
        rows = session.execute(
            select(ModelVersionRow)
            .join(
                CurrentModel,
                and_(
                    CurrentModel.model_name == ModelVersionRow.model_name,
                    CurrentModel.version == ModelVersionRow.version,
                ),
            )
            .where(ModelVersionRow.removed.is_(False))
            .order_by(ModelVersionRow.model_name)
        ).scalars()
        return {row.model_name: _stored_version(row).as_model_version() for row in rows}

    def set_current(self, session: Session, model_name: str, version: str) -> None:
        """Serve ``version`` of ``model_name`` (publish or rollback) and bump the ``models`` revision.

        Raises ``LookupError`` when that version was never recorded or its files were removed.
        """
        row = self.version(session, model_name, version)
        if row is None:
            raise LookupError(f"{model_name} has no version {version!r}")
        if row.removed:
            raise LookupError(f"{model_name} version {version!r} was removed from disk and cannot be served")
        if self.current_version(session, model_name) == version:
            return
        now = utcnow()
        values = {"model_name": model_name, "version": version, "updated_at": now}
        dialect = _dialect(session)
        if dialect == "postgresql":
            statement = postgresql.insert(CurrentModel).values(**values)
            session.execute(
                statement.on_conflict_do_update(
                    index_elements=[CurrentModel.model_name], set_={"version": version, "updated_at": now}
                )
            )
        elif dialect == "sqlite":
            statement = sqlite.insert(CurrentModel).values(**values)
            session.execute(
                statement.on_conflict_do_update(
                    index_elements=[CurrentModel.model_name], set_={"version": version, "updated_at": now}
                )
            )
        else:  # pragma: no cover - only the two supported backends
            session.merge(CurrentModel(**values))
        _bump_models(session)

    def mark_removed(self, session: Session, model_name: str, versions: list[str]) -> int:
        """Record that these versions' files are gone. The current version can never be marked removed."""
        if not versions:
            return 0
        current = self.current_version(session, model_name)
        if current in versions:
            raise ValueError(f"{model_name} version {current!r} is current and cannot be removed")
        result = session.execute(
            update(ModelVersionRow)
            .where(ModelVersionRow.model_name == model_name, ModelVersionRow.version.in_(versions))
            .values(removed=True)
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount)  # type: ignore[attr-defined]

    def trained_models(self, session: Session) -> set[str]:
        """Models with at least one recorded version."""
        return set(session.scalars(select(ModelVersionRow.model_name).distinct()))

    def run_counts(self, session: Session) -> dict[str, int]:
        """Number of runs by status (for logs and health pages)."""
        return {
            status: int(count)
            for status, count in session.execute(select(TrainingRun.status, func.count()).group_by(TrainingRun.status))
        }
