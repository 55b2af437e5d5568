"""The trainer loop: claim a job, build its frames, fit, write the artefact, publish, record the run.

One ``Trainer`` per process. ``run_forever`` loops until ``stop()`` (SIGTERM/SIGINT in ``__main__``), sleeping
``poll_seconds`` when idle and, every ``schedule_seconds``, re-queueing the jobs of dead trainers and scheduling
the models whose data changed (``scheduling``). ``run_once`` does that maintenance once and then processes every
job that is due, including the ones it just scheduled.

Robustness: every job runs inside ``process``, which never raises (but for ``KeyboardInterrupt``-like stops):
a failure is logged with its traceback, stored with the run and the job, and retried with back-off
(``RetryPolicy``). While a job runs, a heartbeat thread renews its claim, so another trainer re-queues it only
if this process dies. A stop signal during a fit (or any stop request before the fit starts) abandons the job
cleanly: the fit is interrupted, the partial artefact is removed, the job goes back to the queue with its attempt
refunded and the run is marked failed.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field

from recommender_system.managers.versions import VersionManager, new_version_name
from recommender_system.prediction.models import model_class
from recommender_system.prediction.models.registry import TRAINABLE_MODEL_NAMES
from recommender_system.storage.artefacts import ArtefactStore
from recommender_system.storage.config_store import ConfigStore
from recommender_system.storage.database import Database
from recommender_system.storage.training import ClaimedJob, RetryPolicy, TrainingStore
from trainer import scheduling
from trainer.datasets import data_snapshot, load_training_data
from trainer.jobs import ModelFactory, hyperparameters_for, train_model

logger = logging.getLogger(__name__)

SEED = 0


class TrainerStopping(BaseException):  # noqa: N818 - a control-flow signal, like KeyboardInterrupt
    """Raised inside a running fit when the trainer is asked to stop; the job is abandoned and re-queued."""


@dataclass(frozen=True)
class TrainerOptions:
    poll_seconds: float = 5.0
    """Idle sleep between looks at the queue."""
    schedule_seconds: float = 60.0
    """How often the loop re-queues stale jobs and schedules models by itself."""
    lease_seconds: float = 600.0
    """A running job whose claim was not renewed for this long belongs to a dead trainer and is re-queued."""
    heartbeat_seconds: float = 30.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    auto_schedule: bool = True
    temporary_max_age_seconds: float = 6 * 3600.0
    """Leftovers of interrupted artefact writes older than this are deleted."""


@dataclass(frozen=True)
class JobResult:
    job_id: int
    model_name: str
    succeeded: bool
    version: str | None = None
    error: str | None = None
    retry_job_id: int | None = None
    abandoned: bool = False


class _Heartbeat:
    """Renews a running job's claim every ``interval`` seconds in a daemon thread."""

    def __init__(self, trainer: Trainer, job: ClaimedJob, interval: float) -> None:
        self.trainer, self.job, self.interval = trainer, job, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job.id}", daemon=True)
        self.lost = False

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                with self.trainer.database.write_session() as session:
                    owned = self.trainer.training_store.heartbeat(session, self.job.id, self.trainer.worker)
            except Exception:  # noqa: BLE001 - a missed beat is retried; the lease is generous
                logger.warning("job %d: could not renew its claim", self.job.id, exc_info=True)
                continue
            if not owned and not self.lost:
                self.lost = True
                logger.warning(
                    "job %d (%s): the claim was taken over (lease expired)", self.job.id, self.job.model_name
                )

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()


class Trainer:
    def __init__(
        self,
        database: Database,
        training_store: TrainingStore,
        config_store: ConfigStore,
        artefact_store: ArtefactStore,
        version_manager: VersionManager,
        options: TrainerOptions | None = None,
        model_factory: ModelFactory = model_class,
        worker: str | None = None,
    ) -> None:
        self.database = database
        self.training_store = training_store
        self.config_store = config_store
        self.artefact_store = artefact_store
        self.version_manager = version_manager
        self.options = options or TrainerOptions()
        self.model_factory = model_factory
        self.worker = worker or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._stopping = threading.Event()
        self._interruptible = False

    # --- stopping ---------------------------------------------------------------------------------------------
    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def stop(self) -> None:
        """Ask the loop to stop (thread-safe): a claimed job not yet fitting is given back; a fit in progress
        runs to its end (only a signal, through ``handle_signal``, interrupts it)."""
        self._stopping.set()

    def handle_signal(self, signum: int, frame: object) -> None:
        """Signal handler (main thread): stop; a fit in progress is interrupted and its job re-queued."""
        first = not self._stopping.is_set()
        self._stopping.set()
        if first:
            logger.info("signal %d received: stopping", signum)
        if self._interruptible:
            self._interruptible = False
            raise TrainerStopping(f"signal {signum}")

    # --- maintenance ------------------------------------------------------------------------------------------
    def requeue_stale(self) -> list[int]:
        with self.database.write_session() as session:
            return self.training_store.requeue_stale(session, self.options.lease_seconds, self.options.retry)

    def schedule(self) -> dict[str, int]:
        """Decide in a read-only unit of work (counting rows takes no write lock), then request the jobs."""
        with self.database.session() as session:
            config = self.config_store.latest(session)
            decisions = [d for d in scheduling.decide(session, self.training_store, config) if d.train]
        if not decisions:
            return {}
        with self.database.write_session() as session:
            return scheduling.request_jobs(session, self.training_store, decisions)

    def clean_temporary(self) -> None:
        for name in TRAINABLE_MODEL_NAMES:
            self.artefact_store.clean_temporary(name, self.options.temporary_max_age_seconds)

    def maintenance(self) -> None:
        """Re-queue stale jobs, schedule models by themselves, clean interrupted writes; never raises."""
        steps = [("re-queue stale jobs", self.requeue_stale), ("clean temporary files", self.clean_temporary)]
        if self.options.auto_schedule:
            steps.append(("schedule models", self.schedule))
        for description, step in steps:
            try:
                step()
            except Exception:  # noqa: BLE001 - the loop survives a failing maintenance step
                logger.exception("could not %s", description)

    # --- the queue --------------------------------------------------------------------------------------------
    def claim(self) -> ClaimedJob | None:
        with self.database.write_session() as session:
            return self.training_store.claim_next(session, self.worker)

    def run_once(self) -> list[JobResult]:
        """Maintenance once, then every due job (including the ones just scheduled); returns their results."""
        self.maintenance()
        results = []
        while not self.stopping:
            job = self.claim()
            if job is None:
                break
            results.append(self.process(job))
        return results

    def run_forever(self) -> None:
        logger.info(
            "trainer %s started (artefacts in %s, poll every %gs, scheduling every %gs)",
            self.worker,
            self.artefact_store.root,
            self.options.poll_seconds,
            self.options.schedule_seconds,
        )
        next_maintenance = 0.0
        while not self.stopping:
            if time.monotonic() >= next_maintenance:
                self.maintenance()
                next_maintenance = time.monotonic() + self.options.schedule_seconds
            try:
                job = self.claim()
            except Exception:  # noqa: BLE001 - e.g. the database restarting: wait and try again
                logger.exception("could not claim a job; retrying in %gs", self.options.poll_seconds)
                job = None
            if job is not None:
                self.process(job)
                continue
            self._stopping.wait(self.options.poll_seconds)
        logger.info("trainer %s stopped", self.worker)

    # --- one job ----------------------------------------------------------------------------------------------
    def process(self, job: ClaimedJob) -> JobResult:
        """Train, publish and record one claimed job. Never raises: failures are recorded and retried."""
        started = time.perf_counter()
        run_id: int | None = None
        version: str | None = None
        logger.info(
            "job %d: training %s (%s; attempt %d of %d)",
            job.id,
            job.model_name,
            job.reason,
            job.attempts,
            self.options.retry.max_attempts,
        )
        try:
            with _Heartbeat(self, job, self.options.heartbeat_seconds):
                with self.database.session() as session:
                    config = self.config_store.latest(session)
                hyperparameters = hyperparameters_for(job.model_name, config)
                with self.database.write_session() as session:
                    run_id = self.training_store.start_run(session, job.model_name, job.id, hyperparameters)
                with self.database.session() as session:
                    snapshot = data_snapshot(session)
                    data = load_training_data(session, hyperparameters, seed=SEED)
                cls = self.model_factory(job.model_name)
                version = new_version_name()
                self._interruptible = True
                try:
                    if self._stopping.is_set():  # a stop that arrived while the data was being read
                        raise TrainerStopping("stop requested before the fit")
                    trained = train_model(cls, job.model_name, version, data, self.artefact_store, snapshot)
                finally:
                    self._interruptible = False
                del data
                try:
                    published = self.version_manager.publish(job.model_name, version, trained.manifest, run_id)
                except BaseException:
                    self.artefact_store.remove(job.model_name, version)
                    raise
            duration = time.perf_counter() - started
            with self.database.write_session() as session:
                self.training_store.finish_run(
                    session,
                    run_id,
                    version=version,
                    duration=duration,
                    peak_memory_mb=trained.peak_memory_mb,
                    peak_memory_percentage=trained.peak_memory_percentage,
                    hyperparameters=trained.hyperparameters,
                    metrics=trained.metrics,
                )
                if not self.training_store.finish_job(session, job.id, self.worker):
                    logger.warning("job %d: its claim was taken over; version %s is published anyway", job.id, version)
        except TrainerStopping as stop:
            return self._abandon(job, run_id, started, str(stop))
        except Exception as error:  # noqa: BLE001 - one bad job never kills the trainer
            return self._fail(job, run_id, started, error)
        metrics = ", ".join(f"{key}={_fmt(value)}" for key, value in trained.metrics.items())
        logger.info(
            "job %d: %s version %s published in %.1f s (fit %.1f s), peak memory %.0f MB (%.1f%% of RAM); %s%s",
            job.id,
            job.model_name,
            version,
            duration,
            trained.fit_seconds,
            trained.peak_memory_mb,
            trained.peak_memory_percentage,
            metrics or "no metrics",
            f"; removed old version(s) {', '.join(published.removed)}" if published.removed else "",
        )
        return JobResult(job.id, job.model_name, True, version=version)

    def _fail(self, job: ClaimedJob, run_id: int | None, started: float, error: Exception) -> JobResult:
        duration = time.perf_counter() - started
        details = "".join(traceback.format_exception(error))
        logger.error(
            "job %d: training %s failed after %.1f s (attempt %d of %d): %s\n%s",
            job.id,
            job.model_name,
            duration,
            job.attempts,
            self.options.retry.max_attempts,
            error,
            details,
        )
        retry_id: int | None = None
        try:
            with self.database.write_session() as session:
                if run_id is not None:
                    self.training_store.fail_run(session, run_id, error=details, duration=duration)
                retry_id = self.training_store.fail_job(session, job.id, details, self.options.retry, self.worker)
        except Exception:  # noqa: BLE001 - the stale-job sweep will pick the job up again
            logger.exception("job %d: could not record the failure", job.id)
        if retry_id is not None:
            with self.database.session() as session:
                retry = self.training_store.job(session, retry_id)
            when = f" at {retry.available_at:%Y-%m-%d %H:%M:%S} UTC" if retry else ""
            logger.info("job %d: %s will be retried as job %d%s", job.id, job.model_name, retry_id, when)
        else:
            logger.error(
                "job %d: %s is not retried (no attempt left, or another trainer owns it now)", job.id, job.model_name
            )
        return JobResult(job.id, job.model_name, False, error=str(error) or type(error).__name__, retry_job_id=retry_id)

    def _abandon(self, job: ClaimedJob, run_id: int | None, started: float, reason: str) -> JobResult:
        note = f"abandoned: the trainer was stopped ({reason})"
        logger.warning("job %d: %s training %s; it goes back to the queue", job.id, job.model_name, note)
        retry_id: int | None = None
        try:
            with self.database.write_session() as session:
                if run_id is not None:
                    self.training_store.fail_run(session, run_id, error=note, duration=time.perf_counter() - started)
                retry_id = self.training_store.release_job(session, job.id, note, self.worker)
        except Exception:  # noqa: BLE001
            logger.exception("job %d: could not give the job back; the stale-job sweep will", job.id)
        return JobResult(job.id, job.model_name, False, error=note, retry_job_id=retry_id, abandoned=True)


def _fmt(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
