"""``ModelManager`` on both backends with the trainer's real stores: published versions are loaded by a refresh,
a version that fails to load leaves the previous one serving, unpublished models are unloaded, only what changed
is rebuilt; and a loaded trained model serves ``/predict`` from the session history (the one query)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import delete

from recommender_system.domain import Page, Phase, RecommendationContext, SessionHistory
from recommender_system.prediction.config import PipelineConfig
from recommender_system.prediction.models.base import TrainingData
from recommender_system.prediction.models.cooccurrence import CooccurrenceModel
from recommender_system.storage import revisions
from recommender_system.storage.tables import CurrentModel
from tests.factories import T0, add_order, add_session, add_view, seed_shop

# sessions in which A1 goes with B1, and C1 with 12345
EVENTS = pd.DataFrame(
    [
        (f"s:t{k}", f"t{k}", sku, "view", 1.0, T0 + timedelta(minutes=2 * k + step))
        for k in range(6)
        for step, sku in enumerate(("A1", "B1") if k % 2 == 0 else ("C1", "12345"))
    ],
    columns=["user_key", "session_id", "sku", "event", "weight", "timestamp"],
)


def publish(container, version: str, broken: bool = False) -> None:  # type: ignore[no-untyped-def]
    """Write an artefact (a fitted co-occurrence model, or garbage) and make it the served version."""
    artefacts = container.artefact_store()
    if broken:

        def save(directory: Path) -> None:
            (directory / "garbage.bin").write_bytes(b"not a model")

    else:
        model = CooccurrenceModel()
        model.fit(TrainingData(events=EVENTS, hyperparameters={"holdout": False}))
        save = model.save
    artefacts.write("cooccurrence", version, save)
    with container.database().write_session() as session:
        store = container.training_store()
        store.record_version(session, "cooccurrence", version, str(artefacts.directory("cooccurrence", version)))
        store.set_current(session, "cooccurrence", version)


@pytest.fixture
def manager(container, database):  # type: ignore[no-untyped-def]
    with database.write_session() as session:
        seed_shop(session)
    manager = container.model_manager()
    manager.refresh()
    return manager


def test_a_published_version_is_loaded_and_a_broken_one_never_replaces_it(container, manager) -> None:  # type: ignore[no-untyped-def]
    assert "cooccurrence" not in manager.state.models
    publish(container, "v1")
    assert manager.refresh() is True
    assert manager.state.models["cooccurrence"].identifier == "cooccurrence_v1"
    publish(container, "v2", broken=True)
    assert manager.refresh() is True
    assert manager.state.models["cooccurrence"].identifier == "cooccurrence_v1"  # v2 failed to load
    publish(container, "v3")
    manager.refresh()
    assert manager.state.models["cooccurrence"].identifier == "cooccurrence_v3"
    with container.database().write_session() as session:
        session.execute(delete(CurrentModel))
        revisions.bump(session, revisions.MODELS)
    manager.refresh()
    assert "cooccurrence" not in manager.state.models


def test_a_version_that_fails_to_load_is_tried_again_with_back_off(container, manager, caplog) -> None:  # type: ignore[no-untyped-def]
    """E.g. the artefact volume is not mounted yet: no new publication is needed for the model to come up."""
    import logging
    import shutil

    now = [1000.0]
    manager._clock = lambda: now[0]
    publish(container, "v1")
    directory = container.artefact_store().directory("cooccurrence", "v1")
    hidden = directory.with_name("v1-hidden")
    shutil.move(directory, hidden)
    with caplog.at_level(logging.WARNING, logger="recommender_system.managers.model"):
        assert manager.refresh() is True
        assert "cooccurrence" not in manager.state.models
        now[0] += 1.9
        assert manager.refresh() is False  # the first retry is due after 2 s
        now[0] += 0.2
        assert manager.refresh() is True  # tried (and failed) again; the next wait is 4 s
        now[0] += 3.9
        assert manager.refresh() is False
    failures = [r for r in caplog.records if "cooccurrence version v1" in r.getMessage()]
    assert [r.exc_info is not None for r in failures] == [True, False]  # one traceback, then a line per retry
    assert "attempt 2" in failures[1].getMessage()

    shutil.move(hidden, directory)
    now[0] += 0.2
    assert manager.refresh() is True
    assert manager.state.models["cooccurrence"].identifier == "cooccurrence_v1"
    now[0] += 1000
    assert manager.refresh() is False  # nothing left to retry


def test_only_what_changed_is_rebuilt(container, manager) -> None:  # type: ignore[no-untyped-def]
    assert manager.refresh() is False
    catalog = manager.state.catalog
    with container.database().write_session() as session:
        container.config_store().save(session, PipelineConfig(retrieval_size=7))
    assert manager.refresh() is True
    assert manager.state.config.retrieval_size == 7
    assert manager.state.catalog is catalog  # a config change keeps the snapshot
    with container.database().write_session() as session:
        add_order(session, "o-new", [("G1", 9)])
        revisions.bump(session, revisions.ORDERS)
    manager.refresh()
    assert manager.state.catalog is not catalog
    assert manager.state.catalog.skus is catalog.skus  # only the order counts were re-read
    assert manager.state.catalog.units_ordered[manager.state.catalog.sku_index["G1"]] == 9
    # a half-life in the config rebuilds the snapshot with decayed counts
    with container.database().write_session() as session:
        container.config_store().save(session, PipelineConfig.model_validate({"popularityConfig": {"halfLifeDays": 7}}))
    before = manager.state.catalog
    manager.refresh()
    assert manager.state.catalog is not before
    assert manager.state.models["popularity"].config.half_life_days == 7


def test_pick_follows_the_cascade_and_readiness(container, manager) -> None:  # type: ignore[no-untyped-def]
    publish(container, "v1")
    manager.refresh()
    anonymous = RecommendationContext(page=Page.HOMEPAGE)
    assert manager.pick(anonymous, Phase.SCORING).name == "popularity"  # co-occurrence has nothing to go on
    viewer = RecommendationContext(page=Page.HOMEPAGE, history=SessionHistory(visited=("A1",)))
    assert manager.pick(viewer, Phase.SCORING).name == "cooccurrence"
    assert manager.pick(RecommendationContext(page=Page.CATEGORY_LIST, category_id=1), Phase.RETRIEVAL) is None


def test_the_background_refresher_loads_a_new_version(container, manager) -> None:  # type: ignore[no-untyped-def]
    import time

    manager.refresh_seconds = 0.05
    manager.start()
    try:
        publish(container, "v1")
        deadline = time.monotonic() + 10
        while "cooccurrence" not in manager.state.models and time.monotonic() < deadline:
            time.sleep(0.05)
        assert manager.state.models["cooccurrence"].identifier == "cooccurrence_v1"
    finally:
        manager.stop()


def test_a_trained_model_serves_from_the_session_history(container, database, app) -> None:  # type: ignore[no-untyped-def]
    with database.write_session() as session:
        seed_shop(session)
        add_session(session, "viewer")
        add_view(session, "viewer", "C1", T0)
    publish(container, "v1")
    app.container.model_manager().refresh()
    client = app.test_client()

    def ask(body: dict[str, object]) -> list[dict[str, object]]:
        response = client.post("/predict", data=json.dumps(body), content_type="application/json")
        assert response.status_code == 200, response.get_json()
        return response.get_json()

    items = ask({"recommendation_type": "HOMEPAGE", "session_id": "viewer", "user_id": None, "limit": 3})
    assert items[0]["rs_info"]["model_name"] == "cooccurrence"
    assert items[0]["rs_info"]["model_identifier"] == "cooccurrence_v1"
    assert items[0]["product_variant_sku"] == "12345"  # what C1's sessions went with
    anonymous = ask({"recommendation_type": "HOMEPAGE", "session_id": "undefined", "user_id": None, "limit": 3})
    assert anonymous[0]["rs_info"]["model_name"] == "popularity"
