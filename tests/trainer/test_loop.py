"""The trainer loop with toy models (passed through ``model_factory``): publish, failure and retry, abandon, races."""

from __future__ import annotations

import signal
import threading
import time

import pytest
from sqlalchemy import update

from recommender_system.storage import revisions
from recommender_system.storage.tables import TrainingJob, utcnow
from recommender_system.storage.training import RetryPolicy
from tests.trainer.shop import add_shoppers, add_variants
from tests.trainer.toy_models import CrashingSaveModel, FailingFitModel, ToyModel, factory, hooked_model, slow_model
from trainer.__main__ import build_trainer
from trainer.loop import Trainer, TrainerOptions

NO_SCHEDULING = TrainerOptions(auto_schedule=False, heartbeat_seconds=0.05, retry=RetryPolicy(base_seconds=300))


def request(container, *models: str) -> list[int]:  # type: ignore[no-untyped-def]
    with container.database().write_session() as session:
        return [container.training_store().request_job(session, name) for name in models]


def jobs(container, model: str | None = None):  # type: ignore[no-untyped-def]
    with container.database().session() as session:
        return container.training_store().jobs(session, model)


def runs(container, model: str | None = None):  # type: ignore[no-untyped-def]
    with container.database().session() as session:
        return container.training_store().runs(session, model)


def current(container) -> dict[str, str]:  # type: ignore[no-untyped-def]
    with container.database().session() as session:
        return {k: v.version for k, v in container.training_store().current_versions(session).items()}


def trainer_with(container, classes, options: TrainerOptions = NO_SCHEDULING) -> Trainer:  # type: ignore[no-untyped-def]
    return build_trainer(container, options, factory(classes))


def test_a_job_is_trained_published_and_recorded(container) -> None:  # type: ignore[no-untyped-def]
    skus = add_variants(container.database(), 6)
    add_shoppers(container.database(), 5, skus)
    (job_id,) = request(container, "ease")
    with container.database().session() as session:
        models_before = revisions.read_all(session)["models"]

    results = trainer_with(container, {"ease": ToyModel}).run_once()

    assert [(r.job_id, r.succeeded) for r in results] == [(job_id, True)]
    version = results[0].version
    assert current(container) == {"ease": version}
    (job,) = jobs(container)
    assert job.status == "done" and job.finished_at is not None and job.error is None
    (run,) = runs(container)
    assert run.status == "completed" and run.version == version and run.job_id == job_id
    assert run.duration > 0 and run.peak_memory_mb > 10 and 0 < run.peak_memory_percentage < 100
    assert run.metrics["ndcg@20"] == pytest.approx(0.25) and run.metrics["recall@20"] == 0.5
    assert run.metrics["n_events"] == 20 and run.metrics["n_items"] == 6 and "fit_seconds" in run.metrics
    assert run.hyperparameters["selected"] == {"lambda": 30.0}
    assert run.hyperparameters["config"]["ease_config"]["l2_options"] == [10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0]
    assert run.hyperparameters["config"]["event_weights"]["order"] == 5.0

    artefacts = container.artefact_store()
    manifest = artefacts.verify("ease", version)
    assert manifest["data_snapshot"]["n_events"] == 20 and manifest["data_snapshot"]["n_variants"] == 6
    assert manifest["metrics"]["ndcg@20"] == pytest.approx(0.25)
    loaded = ToyModel.load(artefacts.directory("ease", version), version)
    assert loaded.counts.tolist() == [20, 6] and loaded.identifier == f"ease_{version}"
    with container.database().session() as session:
        assert revisions.read_all(session)["models"] == models_before + 1


def test_the_fitted_data_carries_the_configured_hyperparameters(container) -> None:  # type: ignore[no-untyped-def]
    from recommender_system.prediction.config import PipelineConfig

    with container.database().write_session() as session:
        config = PipelineConfig.model_validate({"easeConfig": {"l2Options": [7.0]}, "eventWeights": {"cart": 9}})
        container.config_store().save(session, config)
    request(container, "ease")
    ToyModel.fits.clear()
    trainer_with(container, {"ease": ToyModel}).run_once()
    (data,) = ToyModel.fits
    assert data.hyperparameters["ease_config"]["l2_options"] == [7.0]
    assert data.hyperparameters["event_weights"]["cart"] == 9.0


def test_a_failing_job_is_recorded_retried_later_and_does_not_stop_the_others(container) -> None:  # type: ignore[no-untyped-def]
    bad, good = request(container, "als", "ease")
    trainer = trainer_with(container, {"als": FailingFitModel, "ease": ToyModel})

    results = trainer.run_once()

    assert [(r.model_name, r.succeeded) for r in results] == [("als", False), ("ease", True)]
    assert results[0].retry_job_id == bad
    failed = next(j for j in jobs(container) if j.id == bad)
    assert failed.status == "pending" and failed.attempts == 1
    assert (failed.available_at - utcnow()).total_seconds() > 250, "retried after the back-off, not at once"
    assert "RuntimeError: the toy model refuses to fit" in failed.error and "Traceback" in failed.error
    als_run = runs(container, "als")[0]
    assert als_run.status == "failed" and "the toy model refuses to fit" in als_run.error
    assert current(container) == {"ease": results[1].version}
    assert next(j for j in jobs(container) if j.id == good).status == "done"


def test_a_job_failing_every_time_ends_failed_after_max_attempts(container) -> None:  # type: ignore[no-untyped-def]
    (job_id,) = request(container, "als")
    options = TrainerOptions(auto_schedule=False, retry=RetryPolicy(max_attempts=3, base_seconds=0))
    results = trainer_with(container, {"als": FailingFitModel}, options).run_once()
    assert [r.succeeded for r in results] == [False, False, False]
    (job,) = jobs(container)
    assert job.id == job_id and job.status == "failed" and job.attempts == 3
    assert [r.status for r in runs(container)] == ["failed"] * 3
    assert current(container) == {}


def test_a_crash_while_writing_the_artefact_keeps_the_current_version(container) -> None:  # type: ignore[no-untyped-def]
    request(container, "ease")
    (first,) = trainer_with(container, {"ease": ToyModel}).run_once()
    request(container, "ease")
    (crashed,) = trainer_with(container, {"ease": CrashingSaveModel}).run_once()
    assert first.succeeded and not crashed.succeeded and "disk full" in crashed.error
    assert current(container) == {"ease": first.version}
    artefacts = container.artefact_store()
    assert artefacts.versions_on_disk("ease") == [first.version]
    assert [p.name for p in artefacts.model_directory("ease").iterdir()] == [first.version]
    artefacts.verify("ease", first.version)


@pytest.mark.parametrize("during", ["fit", "save"])
def test_a_stop_during_a_training_abandons_the_job_cleanly(container, during: str) -> None:  # type: ignore[no-untyped-def]
    (job_id,) = request(container, "ease")
    holder: dict[str, Trainer] = {}
    model = hooked_model(lambda: holder["trainer"].handle_signal(signal.SIGTERM, None), during)
    trainer = holder["trainer"] = trainer_with(container, {"ease": model})

    results = trainer.run_once()

    assert [(r.job_id, r.abandoned) for r in results] == [(job_id, True)]
    assert trainer.stopping
    (job,) = jobs(container)
    assert job.status == "pending" and job.attempts == 0 and "abandoned" in job.error
    (run,) = runs(container)
    assert run.status == "failed" and "abandoned" in run.error
    assert current(container) == {} and container.artefact_store().versions_on_disk("ease") == []
    directory = container.artefact_store().model_directory("ease")
    assert not directory.exists() or list(directory.iterdir()) == [], "the half-written artefact is removed"


def test_the_heartbeat_keeps_a_long_job_from_being_requeued(container) -> None:  # type: ignore[no-untyped-def]
    (job_id,) = request(container, "ease")
    database, store = container.database(), container.training_store()

    def sweep_while_fitting() -> None:
        time.sleep(0.3)  # several heartbeats at 0.05 s; then another trainer sweeps with a short lease
        with database.write_session() as session:
            assert store.requeue_stale(session, lease_seconds=0.25) == []

    model = hooked_model(sweep_while_fitting)
    (result,) = trainer_with(container, {"ease": model}).run_once()
    assert result.succeeded and jobs(container)[0].status == "done" and jobs(container)[0].id == job_id


def test_two_trainers_never_train_the_same_job(container) -> None:  # type: ignore[no-untyped-def]
    names = [f"toy{i}" for i in range(6)]
    request(container, *names)
    trainers = [build_trainer(container, NO_SCHEDULING, factory({}, default=slow_model(0.05))) for _ in range(2)]
    done: list[list] = [[], []]
    threads = [threading.Thread(target=lambda i=i: done[i].extend(trainers[i].run_once())) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    processed = sorted(r.model_name for results in done for r in results)
    assert processed == names, "each job processed exactly once across both trainers"
    assert all(r.succeeded for results in done for r in results)
    assert sorted(current(container)) == names


def test_run_forever_stops_when_asked_and_processes_jobs_meanwhile(container) -> None:  # type: ignore[no-untyped-def]
    options = TrainerOptions(auto_schedule=False, poll_seconds=0.05, heartbeat_seconds=0.05)
    trainer = trainer_with(container, {"ease": ToyModel}, options)
    thread = threading.Thread(target=trainer.run_forever)
    thread.start()
    try:
        request(container, "ease")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and "ease" not in current(container):
            time.sleep(0.05)
        assert "ease" in current(container)
    finally:
        trainer.stop()
        thread.join(timeout=10)
    assert not thread.is_alive()


def test_stale_jobs_of_a_dead_trainer_are_picked_up_by_the_next_one(container) -> None:  # type: ignore[no-untyped-def]
    (job_id,) = request(container, "ease")
    with container.database().write_session() as session:
        container.training_store().claim_next(session, "dead-trainer")
        session.execute(update(TrainingJob).values(claimed_at=utcnow().replace(year=2000)))
    options = TrainerOptions(auto_schedule=False, lease_seconds=60, retry=RetryPolicy(base_seconds=0))
    (result,) = trainer_with(container, {"ease": ToyModel}, options).run_once()
    assert result.succeeded and result.job_id == job_id
    (job,) = jobs(container)
    assert job.status == "done" and job.attempts == 2


def test_a_stop_requested_before_the_fit_gives_the_job_back(container) -> None:  # type: ignore[no-untyped-def]
    (job_id,) = request(container, "ease")
    holder: dict[str, Trainer] = {}

    def stopping_factory(name: str) -> type[ToyModel]:  # called after the data was read, just before the fit
        holder["trainer"].stop()
        return ToyModel

    trainer = holder["trainer"] = build_trainer(container, NO_SCHEDULING, stopping_factory)
    (result,) = trainer.run_once()
    assert result.abandoned and result.job_id == job_id
    (job,) = jobs(container)
    assert job.status == "pending" and job.attempts == 0
    assert current(container) == {}
