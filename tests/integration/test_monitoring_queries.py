"""The monitoring store and manager on both backends: metric definitions on hand-built logs, the incremental
aggregation (rollup, hit evaluation, settling) and the equality of rolled-up and raw figures."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from recommender_system.prediction.config import PipelineConfig
from recommender_system.storage.monitoring import ROLLED_PREDICTION
from recommender_system.storage.prediction_log import PredictionLogStore, PredictionRecord
from recommender_system.storage.tables import (
    MonitoringRollup,
    MonitoringSku,
    MonitoringWatermark,
    PredictionLog,
    Product,
    ProductDetailEnter,
    ProductProductVariant,
    ProductVariant,
    TrainingRun,
)

T0 = datetime(2026, 3, 2, 10, 0, 0)


# ------------------------------------------------------------------------------------------------ helpers
def add_variants(database, skus, *, deleted=(), unpublished=(), orphans=()) -> None:
    """One product per SKU (published unless listed), except ``orphans`` which belong to no product."""
    with database.write_session() as session:
        for index, sku in enumerate(skus, start=1):
            session.add(ProductVariant(sku=sku, stock_quantity=5, deleted=sku in deleted))
            if sku in orphans:
                continue
            session.add(Product(id=index, published=sku not in unpublished, deleted=False))
            session.add(ProductProductVariant(product_id=index, product_variant_sku=sku))


def record(at, page, scoring, skus, session_id, *, retrieval="selection", durations=(0.01, 0.02, 0.003)):
    return PredictionRecord(
        created_at=at,
        recommendation_type=page,
        session_id=session_id,
        user_id=None,
        retrieval_model_name=retrieval,
        retrieval_model_identifier=retrieval,
        scoring_model_name=scoring,
        scoring_model_identifier=scoring,
        ordering_model_name=None,
        retrieval_duration=durations[0],
        scoring_duration=durations[1],
        ordering_duration=durations[2],
        skus=tuple(skus),
    )


def log(database, at, page, scoring, skus, session_id, **kwargs) -> None:  # type: ignore[no-untyped-def]
    with database.write_session() as session:
        PredictionLogStore().insert_many(session, [record(at, page, scoring, skus, session_id, **kwargs)])


def view(database, session_id, sku, at, *, model=None, page=None, position=None) -> None:
    with database.write_session() as session:
        session.add(
            ProductDetailEnter(
                session_id=session_id,
                product_id=1,
                product_variant_sku=sku,
                model_name=model,
                recommendation_type=page,
                position=position,
                created_at=at,
            )
        )


def flags(database) -> dict[str, tuple[bool | None, bool | None]]:
    with database.session() as session:
        rows = session.execute(sa.select(PredictionLog.session_id, PredictionLog.hit, PredictionLog.future_hit))
        return {sid: (hit, future) for sid, hit, future in rows}


@pytest.fixture
def manager(container):  # type: ignore[no-untyped-def]
    return container.monitoring_manager()


# ------------------------------------------------------------------------------------------------ definitions
def test_scenario_of_the_replaced_system_counts_each_models_own_predictions(database, manager) -> None:
    """Notes section 7: 4 variants, 4 predictions, 3 views. Coverage 3/4; hits attributed to the producing model."""
    add_variants(database, ["1", "2", "3", "4"])
    log(database, T0, "CART", "similarity", ["1", "2"], "s1", retrieval="similarity")
    log(database, T0, "CART", "similarity", ["2", "3"], "s1", retrieval="similarity")
    log(database, T0, "PRODUCT_DETAIL", "selection", ["1", "2"], "s1")
    log(database, T0, "PRODUCT_DETAIL", "similarity", ["3"], "s2", retrieval="similarity")
    view(database, "s1", "1", T0 + timedelta(seconds=60), model="similarity", page="CART", position=0)
    view(database, "s2", "2", T0 + timedelta(seconds=60))
    view(database, "s2", "1", T0 + timedelta(seconds=61), model="similarity", page="PRODUCT_DETAIL", position=0)

    report = manager.refresh(now=T0 + timedelta(hours=1))
    assert report.complete and report.rolled_up == 4 and report.views == 3
    view_ = manager.performance(T0 - timedelta(hours=1), T0 + timedelta(hours=1))

    general = view_.general
    assert general.predictions == 4
    assert general.coverage == pytest.approx(3 / 4)
    # s1's next view (SKU 1, attributed to similarity's CART slider) is a hit for the similarity CART prediction
    # showing SKU 1 only; the selection prediction showing SKU 1 was not what was clicked
    assert general.hit_rate == pytest.approx(1 / 4)
    # later views of the same session in the top k: P1 (SKU 1) and P3 (SKU 1)
    assert general.future_hit_rate == pytest.approx(2 / 4)

    similarity = view_.by_model["similarity"]
    assert similarity.predictions == 3
    assert similarity.hit_rate == pytest.approx(1 / 3)
    assert similarity.future_hit_rate == pytest.approx(1 / 3)
    assert similarity.coverage == pytest.approx(3 / 4)

    selection = view_.by_model["selection"]
    assert selection.predictions == 1
    assert selection.hit_rate == 0.0
    assert selection.future_hit_rate == 1.0
    assert selection.coverage == pytest.approx(2 / 4)

    popularity = view_.by_model["popularity"]
    assert popularity.predictions == 0 and popularity.hit_rate is None and popularity.future_hit_rate is None


def test_hit_and_future_hit_definitions(database, manager) -> None:
    add_variants(database, [*"abcdefghijk", "x0", "x1", "y2"])
    s = timedelta(seconds=1)
    log(database, T0, "HOMEPAGE", "popularity", "abc", "A")  # next view b: unattributed hit
    view(database, "A", "b", T0 + 10 * s)
    log(database, T0, "HOMEPAGE", "popularity", "ab", "B")  # next view misses, a later one matches
    view(database, "B", "k", T0 + 10 * s)
    view(database, "B", "a", T0 + 300 * s)
    log(database, T0, "HOMEPAGE", "ease", "abc", "C")  # attribution says position 12: not in the top 10
    view(database, "C", "a", T0 + 10 * s, model="ease", page="HOMEPAGE", position=12)
    log(database, T0, "PRODUCT_DETAIL", "cooccurrence", ["x1", "y2"], "D")  # one click, one view per variant
    view(database, "D", "x0", T0 + 20 * s)
    view(database, "D", "x1", T0 + 20.5 * s)
    log(database, T0, "HOMEPAGE", "popularity", "a", "E")  # the only view comes after the session horizon
    view(database, "E", "a", T0 + timedelta(hours=25))
    log(database, T0, "CART", "ease", "a", "F")  # attributed to another page type of the same model
    view(database, "F", "a", T0 + 10 * s, model="ease", page="HOMEPAGE", position=0)
    log(database, T0, "HOMEPAGE", "popularity", "a", "G")  # no view at all
    log(database, T0, "HOMEPAGE", "popularity", "abc", None)  # anonymous

    manager.refresh(now=T0 + timedelta(hours=1))
    found = flags(database)
    assert found["A"] == (True, True)
    assert found["B"] == (False, True)
    assert found["C"] == (False, True)
    assert found["D"] == (True, True)
    assert found["E"] == (None, None)  # not settled yet: the session may still come back
    assert found["F"] == (False, True)
    assert found["G"] == (None, None)

    manager.refresh(now=T0 + timedelta(hours=26))
    found = flags(database)
    assert found["E"] == (False, False)
    assert found["G"] == (False, False)
    assert found[None] == (False, False)
    assert found["A"] == (True, True)

    view_ = manager.performance(T0 - timedelta(hours=1), T0 + timedelta(hours=1))
    assert view_.general.predictions == 8
    assert view_.general.hit_rate == pytest.approx(2 / 8)
    assert view_.general.future_hit_rate == pytest.approx(5 / 8)
    assert view_.by_model["popularity"].hit_rate == pytest.approx(1 / 5)  # A, B, E, G and the anonymous one
    assert view_.by_model["ease"].future_hit_rate == pytest.approx(2 / 2)
    assert view_.by_model["cooccurrence"].hit_rate == 1.0


def test_evaluation_is_incremental_and_tolerates_late_log_writes(database, manager) -> None:
    add_variants(database, ["a", "b"])
    log(database, T0, "HOMEPAGE", "popularity", ["a"], "H")
    manager.refresh(now=T0 + timedelta(hours=1))
    assert flags(database)["H"] == (None, None)

    view(database, "H", "a", T0 + timedelta(hours=2))  # the shopper comes back within the horizon
    manager.refresh(now=T0 + timedelta(hours=3))
    assert flags(database)["H"] == (True, True)

    view(database, "I", "b", T0 + timedelta(seconds=30))  # the view is processed before its prediction is logged
    manager.refresh(now=T0 + timedelta(hours=3))
    log(database, T0, "HOMEPAGE", "popularity", ["b"], "I")
    manager.refresh(now=T0 + timedelta(hours=3))
    assert flags(database)["I"] == (True, True)


def test_coverage_counts_live_variants_only(database, manager) -> None:
    # a: live; b: deleted; c: its only product unpublished; d: of no product (live); e: live
    add_variants(database, ["a", "b", "c", "d", "e"], deleted={"b"}, unpublished={"c"}, orphans={"d"})
    log(database, T0, "HOMEPAGE", "popularity", ["a", "b", "c", "zzz"], "s")
    view_ = manager.performance(T0 - timedelta(hours=1), T0 + timedelta(hours=1))
    assert view_.general.coverage == pytest.approx(1 / 3)


def test_durations_per_model(database, manager) -> None:
    add_variants(database, ["a"])
    log(database, T0, "HOMEPAGE", "ease", ["a"], "s", retrieval="similarity", durations=(0.1, 0.5, 0.01))
    log(database, T0, "CART", "ease", ["a"], "s", retrieval="popularity", durations=(0.3, 0.2, 0.03))
    log(database, T0, "CART", "gru4rec", ["a"], "s", retrieval="similarity", durations=(0.2, 0.9, 0.02))
    view_ = manager.performance(T0 - timedelta(hours=1), T0 + timedelta(hours=1))

    ease = view_.by_model["ease"]
    assert (ease.scoring.avg, ease.scoring.max) == (pytest.approx(0.35), pytest.approx(0.5))
    assert ease.ordering.avg == pytest.approx(0.02)
    assert ease.retrieval.avg is None  # ease retrieved nothing: retrieval durations go to the retrieval model
    similarity = view_.by_model["similarity"]
    assert (similarity.retrieval.avg, similarity.retrieval.max) == (pytest.approx(0.15), pytest.approx(0.2))
    assert similarity.predictions == 0
    assert view_.by_model["popularity"].retrieval.max == pytest.approx(0.3)
    general = view_.general
    assert general.retrieval.max == pytest.approx(0.3)
    assert general.scoring.max == pytest.approx(0.9)  # the real maximum, not a copy of the retrieval maximum
    assert general.ordering.avg == pytest.approx(0.02)


def test_training_counts_exclude_running_runs_from_failures(database, container, manager) -> None:
    store = container.training_store()
    with database.write_session() as session:
        first = store.start_run(session, "ease")
        store.finish_run(session, first, version="v1", duration=10.0, peak_memory_mb=100.0, peak_memory_percentage=1.0)
        second = store.start_run(session, "ease")
        store.finish_run(session, second, version="v2", duration=20.0, peak_memory_mb=300.0, peak_memory_percentage=3.0)
        failed = store.start_run(session, "ease")
        store.fail_run(session, failed, error="boom", duration=2.0)
        store.start_run(session, "ease")  # still running
        store.start_run(session, "gru4rec")  # still running
        old = store.start_run(session, "ease")
        session.execute(sa.update(TrainingRun).where(TrainingRun.id == old).values(started_at=T0 - timedelta(days=30)))
    now = datetime.now().replace(microsecond=0)  # noqa: DTZ005 - a wide window around the real clock
    view_ = manager.training(now - timedelta(days=2), now + timedelta(days=2))
    ease = view_.by_model["ease"]
    assert (ease.started, ease.completed, ease.failed, ease.running) == (4, 2, 1, 1)
    assert (ease.duration.avg, ease.duration.max) == (pytest.approx(15.0), pytest.approx(20.0))
    assert (ease.peak_memory.avg, ease.peak_memory.max) == (pytest.approx(200.0), pytest.approx(300.0))
    assert ease.peak_memory_percentage.max == pytest.approx(3.0)
    gru4rec = view_.by_model["gru4rec"]
    assert (gru4rec.started, gru4rec.completed, gru4rec.failed, gru4rec.running) == (1, 0, 0, 1)
    assert gru4rec.duration.avg is None
    assert (view_.general.started, view_.general.failed) == (5, 1)
    assert "dummy" not in view_.by_model and set(view_.by_model) == {m.name for m in view_.models}


# ------------------------------------------------------------------------------------------------ aggregation
def _snapshot(manager, database, windows):  # type: ignore[no-untyped-def]
    result = []
    with database.session() as session:
        for date_from, date_to, bucket, page in windows:
            figures = manager.store.window(session, date_from, date_to, bucket=bucket, page=page)
            result.append(
                (
                    figures.live_variants,
                    {
                        grouping: {
                            key: (
                                f.predictions,
                                f.hits,
                                f.future_hits,
                                f.covered,
                                round(f.retrieval.total, 9),
                                f.retrieval.maximum,
                                round(f.scoring.total, 9),
                                f.scoring.maximum,
                                round(f.ordering.total, 9),
                                f.ordering.maximum,
                            )
                            for key, f in groups.items()
                        }
                        for grouping, groups in figures.groups.items()
                    },
                )
            )
    return result


def test_rolled_up_figures_equal_the_raw_log(database, manager) -> None:
    rng = random.Random(7)
    skus = [f"v{i}" for i in range(30)]
    add_variants(database, skus)
    pages = ["HOMEPAGE", "PRODUCT_DETAIL", "CART", "CATEGORY_LIST"]
    models = ["popularity", "ease", "similarity", "selection"]
    records, views = [], []
    for index in range(300):  # three days of traffic
        at = T0 + timedelta(minutes=rng.randrange(0, 3 * 24 * 60), seconds=rng.randrange(60))
        session_id = f"s{rng.randrange(40)}"
        records.append(
            record(
                at,
                rng.choice(pages),
                rng.choice(models),
                rng.sample(skus, rng.randrange(1, 12)),
                session_id,
                retrieval=rng.choice(["selection", "similarity", None]),
                durations=(rng.random() / 10, rng.random() / 5, rng.random() / 50),
            )
        )
        if index % 3 == 0:
            views.append(
                ProductDetailEnter(
                    session_id=session_id,
                    product_id=1,
                    product_variant_sku=rng.choice(skus),
                    created_at=at + timedelta(seconds=rng.randrange(5, 900)),
                )
            )
    with database.write_session() as session:
        PredictionLogStore().insert_many(session, records)
        session.add_all(views)
    manager.refresh(now=T0 + timedelta(days=5), chunk=40)  # many small steps
    with database.session() as session:
        periods = dict(
            session.execute(sa.select(MonitoringRollup.period, sa.func.count()).group_by(MonitoringRollup.period)).all()
        )
        assert periods["hour"] > periods["day"] > 0
        ids = session.execute(sa.select(sa.func.count(), sa.func.max(MonitoringSku.id))).one()
        assert ids[0] == ids[1] == 30  # one dense small integer per SKU: the bit sets stay short
        assert session.scalar(sa.select(sa.func.count()).where(PredictionLog.future_hit.is_(None))) == 0
    day, hour, minute = timedelta(days=1), timedelta(hours=1), timedelta(minutes=1)
    windows = [
        (T0 + 7 * minute, T0 + 2 * day + 4 * hour + 23 * minute, None, None),  # whole days, hours and raw edges
        (T0 - 10 * hour, T0 + 3 * day, None, None),  # midnight to midnight
        (T0 + 10 * minute, T0 + 50 * minute, None, None),  # inside one hour: all raw
        (T0 + 7 * minute, T0 + day + 4 * hour + 23 * minute, "hour", None),
        (T0 - 3 * hour, T0 + 3 * day + 9 * hour, "day", "CART"),
        (T0 + 31 * minute, T0 + 2 * day + 3 * hour + timedelta(seconds=1), "day", "HOMEPAGE"),
        (T0 + 5 * hour, T0 + 29 * hour, "hour", "PRODUCT_DETAIL"),
    ]
    rolled = _snapshot(manager, database, windows)
    assert rolled[1][1]["general"][(None,)][0] == 300
    with database.write_session() as session:  # forget the rollup: every figure now comes from the raw log
        session.execute(sa.delete(MonitoringRollup))
        session.execute(sa.delete(MonitoringWatermark).where(MonitoringWatermark.name == ROLLED_PREDICTION))
    raw = _snapshot(manager, database, windows)
    assert rolled == raw


def test_young_predictions_are_read_raw_until_rolled_up(database, manager) -> None:
    add_variants(database, ["a", "b"])
    log(database, T0, "HOMEPAGE", "popularity", ["a"], "s")
    log(database, T0 + timedelta(minutes=30), "HOMEPAGE", "popularity", ["b"], "s")
    report = manager.refresh(now=T0 + timedelta(minutes=30, seconds=10))  # the second one is too young
    assert report.rolled_up == 1
    with database.session() as session:
        figures = manager.store.window(session, T0 - timedelta(hours=2), T0 + timedelta(hours=2))
        general = figures.groups["general"][(None,)]
    assert (general.predictions, general.covered) == (2, 2)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # SQLite serialises writers itself
def test_a_refresh_is_skipped_while_another_process_aggregates(database, manager, database_url) -> None:
    from recommender_system.storage.monitoring import _LOCK_KEY

    add_variants(database, ["a"])
    log(database, T0, "HOMEPAGE", "popularity", ["a"], "s")
    engine = sa.create_engine(database_url)
    with engine.connect() as other:
        other.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": _LOCK_KEY})
        report = manager.refresh(now=T0 + timedelta(hours=1))
        assert report.skipped and report.rolled_up == 0
        other.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": _LOCK_KEY})
    engine.dispose()
    assert manager.refresh(now=T0 + timedelta(hours=1)).rolled_up == 1


def test_model_states(database, container, manager) -> None:
    add_variants(database, ["a", "b"])
    states = {m.name: m for m in manager.model_states(include_dummy=True)}
    assert list(states)[0] == "dummy" and len(states) == 9
    assert states["selection"].is_trained and not states["selection"].can_be_trained
    assert states["ease"].can_be_trained and not states["ease"].is_trained
    assert states["similarity"].is_ready_for_training
    assert not states["gru4rec"].is_ready_for_training  # no views yet (multiplier 10 x 2 variants)
    for index in range(21):
        view(database, f"s{index}", "a", T0)
    with database.write_session() as session:
        store = container.training_store()
        store.record_version(session, "ease", "v1", "/nowhere")
        store.set_current(session, "ease", "v1")
        container.config_store().save(session, PipelineConfig(models_disabled={"popularity": True}))
    states = {m.name: m for m in manager.model_states(include_dummy=False)}
    assert "dummy" not in states
    assert states["gru4rec"].is_ready_for_training
    assert states["ease"].is_trained
    assert states["popularity"].disabled and not states["selection"].disabled
