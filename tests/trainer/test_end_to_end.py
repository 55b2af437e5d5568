"""End to end: the ecoseller demo loaded, ``python -m trainer --once``, ``/predict`` answered by the learned models,
and a hot swap of a published version under concurrent requests (the old version keeps serving until the new one
is loaded; a version that fails to load is skipped).

One SQLite database per module (loading the demo and training take a while); the trainer's queue and the stores
are tested on PostgreSQL as well in their own tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from dependency_injector import providers

from recommender_system.prediction.config import PipelineConfig
from recommender_system.settings import Settings
from recommender_system.storage import revisions
from recommender_system.storage.artefacts import MANIFEST

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
KNOWN_SESSION = "1"  # demo session (and user) 1 viewed and reviewed variants
VIEWED_VARIANT = "1-cs-720p"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[Any]:
    """A container on a fresh SQLite database with the demo loaded and ``python -m trainer --once`` run."""
    from recommender_system.container import Container
    from recommender_system.demo.loader import load_demo

    root = tmp_path_factory.mktemp("end_to_end")
    shutil.copy(sqlite_template, root / "demo.db")
    settings = Settings(
        database_url=f"sqlite:///{root / 'demo.db'}",
        artefact_dir=root / "artefacts",
        refresh_seconds=0.2,
        api_token=None,
    )
    container = Container()
    container.settings.override(providers.Object(settings))
    load_demo(container, progress=False)
    env = {
        **os.environ,
        "RS_DATABASE_URL": settings.database_url,
        "RS_ARTEFACT_DIR": str(settings.artefact_dir),
        "RS_LOG_LEVEL": "INFO",
    }
    done = subprocess.run(
        [sys.executable, "-m", "trainer", "--once"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-4000:]
    container.trainer_log = done.stderr  # type: ignore[attr-defined]
    yield container
    container.model_manager().stop()
    container.prediction_log_writer().close()
    container.database().dispose()


@pytest.fixture(scope="module")
def client(trained: Any) -> Any:
    from recommender_system.app import create_app

    app = create_app(trained)
    app.config["TESTING"] = True
    return app.test_client()


def current_versions(container: Any) -> dict[str, str]:
    with container.database().session() as session:
        return {k: v.version for k, v in container.training_store().current_versions(session).items()}


def wait_for_models_revision(container: Any, timeout: float = 20.0) -> None:
    """Until the web side's model manager has seen the database's current ``models`` revision."""
    with container.database().session() as session:
        wanted = revisions.read_all(session)[revisions.MODELS]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if container.model_manager().state.revisions.get(revisions.MODELS) == wanted:
            return
        time.sleep(0.05)
    raise AssertionError("the model manager did not pick up the new models revision")


def homepage(client: Any) -> tuple[int, list[dict[str, Any]]]:
    response = client.post(
        "/predict", json={"recommendation_type": "HOMEPAGE", "session_id": KNOWN_SESSION, "limit": 10}
    )
    return response.status_code, response.get_json()


def test_the_trainer_trains_every_model_with_enough_data(trained: Any) -> None:
    versions = current_versions(trained)
    assert {"ease", "similarity", "als", "cooccurrence"} <= set(versions), trained.trainer_log[-4000:]
    assert "gru4rec" not in versions, "14,986 views are not more than 10 x 2,188 variants (ecoseller's rule)"
    with trained.database().session() as session:
        runs = trained.training_store().runs(session)
    assert {r.model_name for r in runs if r.status == "completed"} == set(versions)
    ease = next(r for r in runs if r.model_name == "ease")
    assert ease.metrics["n_events"] > 20_000 and "ndcg@20" in ease.metrics and ease.peak_memory_mb > 0
    for name, version in versions.items():
        assert trained.artefact_store().verify(name, version)["data_snapshot"]["n_variants"] == 2188


def test_predictions_are_answered_by_the_learned_models(trained: Any, client: Any) -> None:
    versions = current_versions(trained)
    wait_for_models_revision(trained)
    status, items = homepage(client)
    assert status == 200 and len(items) == 10
    assert {item["rs_info"]["model_name"] for item in items} == {"ease"}
    assert items[0]["rs_info"]["model_identifier"] == f"ease_{versions['ease']}"

    with trained.database().write_session() as session:
        config = {
            "productDetailRetrievalCascade": ["similarity", "popularity", "selection"],
            "productDetailScoringCascade": ["similarity", "popularity", "selection"],
        }
        trained.config_store().save(session, PipelineConfig.model_validate(config))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if trained.model_manager().state.config.product_detail_scoring_cascade == config["productDetailScoringCascade"]:
            break
        time.sleep(0.05)
    response = client.post(
        "/predict",
        json={"recommendation_type": "PRODUCT_DETAIL", "session_id": "new-visitor", "variants": [VIEWED_VARIANT]},
    )
    assert response.status_code == 200
    items = response.get_json()
    assert items and {item["rs_info"]["model_name"] for item in items} == {"similarity"}
    assert items[0]["rs_info"]["model_identifier"] == f"similarity_{versions['similarity']}"
    skus = [item["product_variant_sku"] for item in items]
    assert VIEWED_VARIANT not in skus


def _copy_of(source: Path, corrupt: bool = False):  # type: ignore[no-untyped-def]
    """A ``save`` that copies a version's files (a new version of the same model), optionally with a bad matrix."""

    def save(directory: Path) -> None:
        for path in source.iterdir():
            if path.name != MANIFEST:
                shutil.copy(path, directory / path.name)
        if corrupt:
            np.save(directory / "B.npy", np.zeros((3, 3), dtype=np.float32))

    return save


def test_hot_swap_under_concurrent_requests(trained: Any, client: Any) -> None:
    from recommender_system.managers.versions import new_version_name

    artefacts, manager = trained.artefact_store(), trained.version_manager()
    old = current_versions(trained)["ease"]
    wait_for_models_revision(trained)
    assert homepage(client)[1][0]["rs_info"]["model_identifier"] == f"ease_{old}"

    stop = threading.Event()
    seen: list[list[tuple[int, str]]] = [[] for _ in range(3)]

    def hammer(log: list[tuple[int, str]]) -> None:
        own = client.application.test_client()
        while not stop.is_set():
            status, items = homepage(own)
            log.append((status, items[0]["rs_info"]["model_identifier"] if status == 200 and items else ""))

    threads = [threading.Thread(target=hammer, args=(log,)) for log in seen]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.3)
        new = new_version_name()
        manifest = artefacts.write("ease", new, _copy_of(artefacts.directory("ease", old)))
        manager.publish("ease", new, manifest)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any(ident == f"ease_{new}" for log in seen for _, ident in log):
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)

    assert all(status == 200 for log in seen for status, _ in log), "every request answered during the swap"
    identifiers = {ident for log in seen for _, ident in log}
    assert identifiers == {f"ease_{old}", f"ease_{new}"}
    for log in seen:  # within one thread's sequence of requests the switch happens once, never back
        idents = [ident for _, ident in log]
        first_new = idents.index(f"ease_{new}")
        assert set(idents[first_new:]) == {f"ease_{new}"}

    # a version that fails to load is skipped: the web side keeps serving the one it has
    broken = new_version_name()
    manifest = artefacts.write("ease", broken, _copy_of(artefacts.directory("ease", new), corrupt=True))
    manager.publish("ease", broken, manifest)
    wait_for_models_revision(trained)
    status, items = homepage(client)
    assert status == 200 and items[0]["rs_info"]["model_identifier"] == f"ease_{new}"

    # and a rollback is picked up the same way
    manager.rollback("ease", old)
    wait_for_models_revision(trained)
    assert homepage(client)[1][0]["rs_info"]["model_identifier"] == f"ease_{old}"
