"""The trainer's own scheduling decisions (never trained, changed share, age, and the reasons not to)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from recommender_system.prediction.config import PipelineConfig
from recommender_system.storage.database import Database
from recommender_system.storage.tables import ModelVersionRow, ProductVariant, TrainingJob, utcnow
from recommender_system.storage.training import TrainingStore
from tests.trainer.shop import START, add_shoppers, add_variants
from trainer import scheduling
from trainer.datasets import data_snapshot

store = TrainingStore()


def decisions(database: Database, config: PipelineConfig | None = None, models=("ease", "similarity")):  # type: ignore[no-untyped-def]
    with database.session() as session:
        found = scheduling.decide(session, store, config or PipelineConfig(), models)
    return {d.model_name: d for d in found}


def record_version(database: Database, model: str, age: timedelta = timedelta(0)) -> None:
    """A version trained on the data as it is now, ``age`` ago."""
    with database.write_session() as session:
        snapshot = data_snapshot(session)
        version = store.record_version(
            session, model, f"v{utcnow():%H%M%S%f}", "/x", manifest={"data_snapshot": snapshot}
        )
        session.execute(
            update(ModelVersionRow).where(ModelVersionRow.version == version.version).values(created_at=utcnow() - age)
        )


def test_never_trained_models_with_enough_data_are_scheduled(database: Database) -> None:
    assert not any(d.train for d in decisions(database).values()), "no variants, no events: nothing to train"
    skus = add_variants(database, 10)
    found = decisions(database)
    assert found["similarity"].train and "never trained" in found["similarity"].reason
    assert not found["ease"].train and "not enough data" in found["ease"].reason
    add_shoppers(database, 2, skus, per_session=3)  # 6 events: not more than 0.5 x 10 variants and < 10
    assert not decisions(database)["ease"].train
    add_shoppers(database, 4, skus, per_session=3)  # 12 events > 5
    assert decisions(database)["ease"].train


def test_gru4rec_needs_views_beyond_its_multiplier(database: Database) -> None:
    skus = add_variants(database, 4)
    add_shoppers(database, 5, skus, per_session=4)  # 20 views
    config = PipelineConfig.model_validate({"gru4recConfig": {"eventsMultiplier": 10}})
    assert not decisions(database, config, ("gru4rec",))["gru4rec"].train
    config = PipelineConfig.model_validate({"gru4recConfig": {"eventsMultiplier": 4}})
    assert decisions(database, config, ("gru4rec",))["gru4rec"].train


def test_a_share_of_new_events_schedules_the_event_models(database: Database) -> None:
    skus = add_variants(database, 10)
    add_shoppers(database, 10, skus, per_session=5)  # 50 events
    record_version(database, "ease")
    record_version(database, "similarity")
    found = decisions(database)
    assert not found["ease"].train and "0 new events over 50" in found["ease"].reason
    add_shoppers(database, 1, skus, per_session=5, at=START + timedelta(days=1))  # +10%
    assert not decisions(database)["ease"].train
    add_shoppers(database, 2, skus, per_session=5, at=START + timedelta(days=2))  # +20% in all
    found = decisions(database)
    assert found["ease"].train and "15 new events over 50" in found["ease"].reason
    assert not found["similarity"].train, "similarity depends on the catalogue only"
    config = PipelineConfig.model_validate({"trainingConfig": {"changedShare": 0.5}})
    assert not decisions(database, config)["ease"].train


def test_catalogue_changes_schedule_similarity(database: Database) -> None:
    add_variants(database, 10)
    record_version(database, "similarity")
    assert not decisions(database)["similarity"].train
    with database.write_session() as session:
        session.execute(
            update(ProductVariant)
            .where(ProductVariant.sku.in_(["sku1", "sku2"]))
            .values(updated_at=START + timedelta(days=1))
        )
    found = decisions(database)
    assert found["similarity"].train and "2 catalogue rows changed over 10 variants" in found["similarity"].reason
    add_variants(database, 1, start=10, updated_at=START + timedelta(days=2))
    assert decisions(database)["similarity"].train


def test_an_old_version_is_refreshed(database: Database) -> None:
    add_variants(database, 10)
    record_version(database, "similarity", age=timedelta(hours=23))
    assert not decisions(database)["similarity"].train, "23 h old, refresh period 24 h, nothing changed"
    with database.write_session() as session:
        session.execute(update(ModelVersionRow).values(created_at=utcnow() - timedelta(hours=25)))
    found = decisions(database)
    assert found["similarity"].train and "25.0 h old" in found["similarity"].reason
    config = PipelineConfig.model_validate({"trainingConfig": {"refreshHours": 48}})
    assert not decisions(database, config)["similarity"].train


def test_disabled_busy_and_recently_failed_models_are_not_scheduled(database: Database) -> None:
    add_variants(database, 10)
    config = PipelineConfig.model_validate({"models_disabled": {"similarity": True}})
    assert "disabled" in decisions(database, config)["similarity"].reason
    with database.write_session() as session:
        job_id = store.request_job(session, "similarity", "dashboard")
    assert "already pending" in decisions(database)["similarity"].reason
    with database.write_session() as session:
        session.execute(
            update(TrainingJob)
            .where(TrainingJob.id == job_id)
            .values(status="failed", finished_at=utcnow() - timedelta(hours=1))
        )
    assert "failed" in decisions(database)["similarity"].reason
    with database.write_session() as session:
        session.execute(
            update(TrainingJob).where(TrainingJob.id == job_id).values(finished_at=utcnow() - timedelta(hours=30))
        )
    assert decisions(database)["similarity"].train, "after a refresh period the failed model is tried again"


def test_schedule_requests_coalescing_jobs(database: Database) -> None:
    add_variants(database, 10)
    with database.write_session() as session:
        requested = scheduling.schedule(session, store, PipelineConfig(), ("similarity", "ease"))
        assert list(requested) == ["similarity"]
        assert scheduling.schedule(session, store, PipelineConfig(), ("similarity",)) == {}
        (job,) = store.jobs(session, "similarity")
    assert job.status == "pending" and job.reason.startswith("scheduled: never trained")
