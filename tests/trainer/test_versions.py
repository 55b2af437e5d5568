"""Publishing keeps the last N versions on disk (never the current one); rollback, also from the command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from recommender_system.managers.versions import VersionManager, new_version_name, rollback
from recommender_system.storage import revisions
from recommender_system.storage.artefacts import ArtefactError

ROOT = Path(__file__).resolve().parents[2]


def publish(manager: VersionManager, model: str, version: str) -> None:
    manager.artefact_store.write(model, version, lambda d: (d / "weights.bin").write_bytes(version.encode()))
    manager.publish(model, version, {"version": version})


def served(container, model: str = "ease") -> str | None:  # type: ignore[no-untyped-def]
    with container.database().session() as session:
        return container.training_store().current_version(session, model)


def test_publish_keeps_the_newest_versions_and_records_the_removed_ones(container) -> None:  # type: ignore[no-untyped-def]
    manager: VersionManager = container.version_manager()
    assert manager.keep_versions == 3  # Settings.keep_versions default
    for version in ("v1", "v2", "v3", "v4", "v5"):
        publish(manager, "ease", version)
    assert served(container) == "v5"
    assert manager.artefact_store.versions_on_disk("ease") == ["v3", "v4", "v5"]
    with container.database().session() as session:
        rows = container.training_store().versions(session, "ease", include_removed=True)
        assert [(v.version, v.removed) for v in rows] == [
            ("v5", False),
            ("v4", False),
            ("v3", False),
            ("v2", True),
            ("v1", True),
        ]
        assert revisions.read_all(session)["models"] == 5
    assert [v.version for v in manager.kept_versions("ease")] == ["v5", "v4", "v3"]


def test_the_current_version_survives_pruning_after_a_rollback(container) -> None:  # type: ignore[no-untyped-def]
    manager: VersionManager = container.version_manager()
    for version in ("v1", "v2", "v3"):
        publish(manager, "ease", version)
    manager.rollback("ease", "v1")
    keep_one = VersionManager(container.database(), container.training_store(), manager.artefact_store, keep_versions=1)
    assert keep_one.prune("ease") == ["v2"]
    assert manager.artefact_store.versions_on_disk("ease") == ["v1", "v3"], "the newest and the current one"
    assert served(container) == "v1"
    publish(manager, "ease", "v4")  # a new version replaces the rolled-back one, which may then be pruned
    assert keep_one.prune("ease") == ["v1", "v3"]
    assert manager.artefact_store.versions_on_disk("ease") == ["v4"]


def test_rollback_defaults_to_the_previous_version_and_explains_errors(container) -> None:  # type: ignore[no-untyped-def]
    manager: VersionManager = container.version_manager()
    with pytest.raises(LookupError, match="unknown model 'nosuch'"):
        rollback(container, "nosuch")
    with pytest.raises(LookupError, match="not a trained model"):
        rollback(container, "popularity")
    with pytest.raises(LookupError, match="no trained version"):
        rollback(container, "ease")
    for version in ("v1", "v2", "v3"):
        publish(manager, "ease", version)
    assert rollback(container, "ease") == "v2" and served(container) == "v2"
    assert rollback(container, "ease") == "v1" and served(container) == "v1"
    with pytest.raises(LookupError, match="oldest kept version"):
        rollback(container, "ease")
    assert rollback(container, "ease", "v3") == "v3"
    with pytest.raises(LookupError, match="no kept version 'v9'.*v3, v2, v1"):
        rollback(container, "ease", "v9")


def test_rollback_refuses_a_corrupted_version(container) -> None:  # type: ignore[no-untyped-def]
    manager: VersionManager = container.version_manager()
    for version in ("v1", "v2"):
        publish(manager, "ease", version)
    (manager.artefact_store.directory("ease", "v1") / "weights.bin").write_bytes(b"corrupt")
    with pytest.raises(ArtefactError):
        manager.rollback("ease")
    with pytest.raises(ValueError, match="rollback refused"):
        rollback(container, "ease", "v1")
    assert served(container) == "v2"


def test_publish_refuses_an_incomplete_artefact(container) -> None:  # type: ignore[no-untyped-def]
    manager: VersionManager = container.version_manager()
    incomplete = manager.artefact_store.directory("ease", "v1")
    incomplete.mkdir(parents=True)
    (incomplete / "weights.bin").write_bytes(b"no manifest")
    with pytest.raises(ArtefactError, match="not a complete artefact"):
        manager.publish("ease", "v1", {})
    assert served(container) is None


def test_version_names_are_unique_and_sort_by_time() -> None:
    names = [new_version_name() for _ in range(50)]
    assert len(set(names)) >= 45  # 16 random bits within one second
    assert all(len(name) == 20 and name[8] == "T" for name in names)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "recommender_system", "rollback", *args],
        cwd=ROOT,
        env=os.environ.copy(),  # RS_DATABASE_URL and RS_ARTEFACT_DIR of the fixture
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_rollback_command_line(container, database_url: str, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    from recommender_system.__main__ import main

    manager: VersionManager = container.version_manager()
    for version in ("v1", "v2"):
        publish(manager, "ease", version)
    assert main(["rollback", "ease", "v7"]) == 2  # in-process: the same parser and error handling
    assert "no kept version 'v7'" in caplog.text
    assert main(["rollback", "nosuch"]) == 2 and "unknown model 'nosuch'" in caplog.text
    assert served(container) == "v2"
    if not database_url.startswith("sqlite"):
        return  # the process itself is backend independent: started once, on SQLite
    done = _cli("ease")
    assert done.returncode == 0, done.stderr
    assert "ease now serves version v1" in done.stderr
    assert served(container) == "v1"
