"""TrainingStore on SQLite and PostgreSQL: the queue (claim, coalesce, retry, stale leases), runs and versions."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import update

from recommender_system.storage import revisions
from recommender_system.storage.database import Database
from recommender_system.storage.tables import TrainingJob, utcnow
from recommender_system.storage.training import RetryPolicy, TrainingStore

store = TrainingStore()


def request(database: Database, model: str, reason: str = "requested") -> int:
    with database.write_session() as session:
        return store.request_job(session, model, reason)


def claim(database: Database, worker: str = "w1"):  # type: ignore[no-untyped-def]
    with database.write_session() as session:
        return store.claim_next(session, worker)


def job(database: Database, job_id: int):  # type: ignore[no-untyped-def]
    with database.session() as session:
        return store.job(session, job_id)


def test_requests_for_the_same_model_coalesce_onto_one_pending_job(database: Database) -> None:
    first = request(database, "ease", "dashboard")
    assert request(database, "ease", "scheduled") == first
    other = request(database, "als")
    assert other != first
    with database.session() as session:
        pending = store.jobs(session, status="pending")
    assert [(j.model_name, j.reason) for j in pending] == [("ease", "dashboard"), ("als", "requested")]


def test_claim_takes_the_oldest_due_job_once_and_counts_an_attempt(database: Database) -> None:
    first = request(database, "ease")
    second = request(database, "als")
    claimed = claim(database, "trainer-a")
    assert claimed is not None and claimed.id == first and claimed.attempts == 1
    info = job(database, first)
    assert info.status == "running" and info.claimed_by == "trainer-a" and info.claimed_at is not None
    again = claim(database, "trainer-b")
    assert again is not None and again.id == second
    assert claim(database, "trainer-c") is None


def test_a_job_not_yet_available_is_not_claimed(database: Database) -> None:
    job_id = request(database, "ease")
    with database.write_session() as session:
        session.execute(
            update(TrainingJob).where(TrainingJob.id == job_id).values(available_at=utcnow() + timedelta(hours=1))
        )
    assert claim(database) is None


def test_a_model_with_a_running_job_is_not_claimed_twice(database: Database) -> None:
    request(database, "ease")
    assert claim(database) is not None
    newer = request(database, "ease", "data changed during the training")
    assert claim(database, "w2") is None, "a second trainer must not train the same model concurrently"
    with database.write_session() as session:
        running = store.jobs(session, "ease", "running")[0]
        assert store.finish_job(session, running.id, "w1")
    claimed = claim(database, "w2")
    assert claimed is not None and claimed.id == newer


def test_failure_is_retried_with_exponential_back_off_then_stays_failed(database: Database) -> None:
    policy = RetryPolicy(max_attempts=3, base_seconds=60, max_seconds=3600)
    job_id = request(database, "ease")
    delays = []
    for attempt in (1, 2, 3):
        claimed = claim(database)
        assert claimed is not None and claimed.id == job_id and claimed.attempts == attempt
        before = utcnow()
        with database.write_session() as session:
            retry = store.fail_job(session, job_id, f"boom {attempt}", policy, "w1")
        info = job(database, job_id)
        if attempt < 3:
            assert retry == job_id and info.status == "pending" and info.error == f"boom {attempt}"
            delays.append((info.available_at - before).total_seconds())
            assert claim(database) is None, "a job waiting for its retry is not due yet"
            with database.write_session() as session:  # time passes
                session.execute(update(TrainingJob).where(TrainingJob.id == job_id).values(available_at=utcnow()))
        else:
            assert retry is None and info.status == "failed" and info.error == "boom 3" and info.attempts == 3
    assert delays[0] == pytest.approx(60, abs=5) and delays[1] == pytest.approx(120, abs=5)
    assert claim(database) is None


def test_a_retry_merges_into_a_newer_pending_job_of_the_same_model(database: Database) -> None:
    job_id = request(database, "ease")
    claim(database)
    newer = request(database, "ease", "requested while running")
    with database.write_session() as session:
        retry = store.fail_job(session, job_id, "boom", RetryPolicy(base_seconds=600), "w1")
    assert retry == newer
    failed, pending = job(database, job_id), job(database, newer)
    assert failed.status == "failed" and f"merged into pending job {newer}" in failed.error
    assert pending.status == "pending" and pending.attempts == 1
    assert pending.available_at > utcnow() + timedelta(seconds=500), "the merged retry keeps the back-off"


def test_a_failure_reported_by_a_trainer_that_lost_the_claim_is_ignored(database: Database) -> None:
    job_id = request(database, "ease")
    claim(database, "w1")
    with database.write_session() as session:
        assert store.fail_job(session, job_id, "late", RetryPolicy(), "w2") is None
        assert not store.finish_job(session, job_id, "w2")
    assert job(database, job_id).status == "running"


def test_stale_running_jobs_are_requeued_and_their_runs_failed(database: Database) -> None:
    job_id = request(database, "ease")
    claim(database, "dead-trainer")
    with database.write_session() as session:
        run_id = store.start_run(session, "ease", job_id, {"l2": 10})
    with database.write_session() as session:  # the heartbeat keeps a live claim fresh
        assert store.heartbeat(session, job_id, "dead-trainer")
        assert not store.heartbeat(session, job_id, "someone-else")
        assert store.requeue_stale(session, lease_seconds=60) == []
    with database.write_session() as session:  # ... and then the trainer dies: no beat for a long time
        session.execute(
            update(TrainingJob).where(TrainingJob.id == job_id).values(claimed_at=utcnow() - timedelta(hours=1))
        )
    with database.write_session() as session:
        assert store.requeue_stale(session, lease_seconds=60, policy=RetryPolicy(base_seconds=0)) == [job_id]
    info = job(database, job_id)
    assert info.status == "pending" and "dead-trainer" in info.error and info.claimed_by is None
    with database.session() as session:
        (run,) = store.runs(session, "ease")
    assert run.id == run_id and run.status == "failed" and "stopped renewing" in run.error
    assert claim(database, "w2").id == job_id


def test_a_stale_job_without_attempts_left_stays_failed(database: Database) -> None:
    job_id = request(database, "ease")
    claim(database, "dead")
    with database.write_session() as session:
        session.execute(
            update(TrainingJob).where(TrainingJob.id == job_id).values(claimed_at=utcnow() - timedelta(hours=1))
        )
        assert store.requeue_stale(session, 60, RetryPolicy(max_attempts=1)) == []
    assert job(database, job_id).status == "failed"


def test_release_gives_the_job_back_with_its_attempt_refunded(database: Database) -> None:
    job_id = request(database, "ease")
    claim(database, "w1")
    with database.write_session() as session:
        assert store.release_job(session, job_id, "abandoned", "w1") == job_id
    info = job(database, job_id)
    assert info.status == "pending" and info.attempts == 0 and info.available_at <= utcnow()


def _claim_all(database: Database, worker: str, claimed: list[int], barrier: threading.Barrier) -> None:
    barrier.wait()
    while True:
        with database.write_session() as session:
            found = store.claim_next(session, worker)
        if found is None:
            return
        claimed.append(found.id)
        with database.write_session() as session:
            store.finish_job(session, found.id, worker)


def test_concurrent_trainers_claim_every_job_exactly_once(database_url: str) -> None:
    setup = Database(database_url)
    ids = [request(setup, f"model{i}") for i in range(24)]
    setup.dispose()
    databases = [Database(database_url) for _ in range(4)]  # one engine per trainer, like separate processes
    claimed: list[list[int]] = [[] for _ in databases]
    barrier = threading.Barrier(len(databases))
    threads = [
        threading.Thread(target=_claim_all, args=(db, f"trainer-{i}", claimed[i], barrier))
        for i, db in enumerate(databases)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for db in databases:
        db.dispose()
    everything = [job_id for worker in claimed for job_id in worker]
    assert sorted(everything) == sorted(ids), "every job claimed exactly once"


# --- runs ----------------------------------------------------------------------------------------------------
def test_runs_record_statistics(database: Database) -> None:
    with database.write_session() as session:
        ok = store.start_run(session, "ease", None, {"ease_config": {"l2_options": [10.0]}})
        bad = store.start_run(session, "als", None, {})
    with database.write_session() as session:
        store.finish_run(
            session,
            ok,
            version="v1",
            duration=2.5,
            peak_memory_mb=300.0,
            peak_memory_percentage=4.2,
            hyperparameters={"selected": {"l2": 10.0}},
            metrics={"ndcg@20": 0.11},
        )
        store.fail_run(session, bad, error="Traceback ... RuntimeError", duration=0.5)
    with database.session() as session:
        runs = {run.model_name: run for run in store.runs(session)}
        assert store.run_counts(session) == {"completed": 1, "failed": 1}
    assert runs["ease"].status == "completed" and runs["ease"].version == "v1"
    assert runs["ease"].metrics == {"ndcg@20": 0.11} and runs["ease"].peak_memory_mb == 300.0
    assert runs["ease"].hyperparameters == {"selected": {"l2": 10.0}} and runs["ease"].duration == 2.5
    assert runs["als"].status == "failed" and "RuntimeError" in runs["als"].error


# --- versions ------------------------------------------------------------------------------------------------
def test_versions_publish_rollback_and_removal(database: Database) -> None:
    with database.write_session() as session:
        before = revisions.read_all(session)["models"]
        for version in ("v1", "v2"):
            store.record_version(session, "ease", version, f"/a/ease/{version}", manifest={"version": version})
        store.record_version(session, "als", "a1", "/a/als/a1")
        assert store.current_versions(session) == {}
        store.set_current(session, "ease", "v2")
        store.set_current(session, "als", "a1")
    with database.session() as session:
        current = store.current_versions(session)
        assert revisions.read_all(session)["models"] == before + 2
    assert {name: v.identifier for name, v in current.items()} == {"als": "als_a1", "ease": "ease_v2"}
    assert current["ease"].path == "/a/ease/v2"

    with database.write_session() as session:
        store.set_current(session, "ease", "v1")  # rollback
        assert [v.version for v in store.versions(session, "ease")] == ["v2", "v1"]
        assert store.newest_version(session, "ease").version == "v2"
        with pytest.raises(ValueError, match="current"):
            store.mark_removed(session, "ease", ["v1"])
        assert store.mark_removed(session, "ease", ["v2"]) == 1
        with pytest.raises(LookupError, match="removed"):
            store.set_current(session, "ease", "v2")
        with pytest.raises(LookupError, match="no version"):
            store.set_current(session, "ease", "v9")
        assert [v.version for v in store.versions(session, "ease")] == ["v1"]
        assert store.trained_models(session) == {"ease", "als"}
    with database.session() as session:
        assert store.current_versions(session)["ease"].version == "v1"
        assert revisions.read_all(session)["models"] == before + 3
