"""ArtefactStore: atomic version directories, manifest checksums, pruning, interrupted writes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from recommender_system.storage.artefacts import MANIFEST, ArtefactError, ArtefactStore


def save_arrays(directory: Path) -> None:
    np.save(directory / "B.npy", np.arange(12, dtype=np.float32).reshape(3, 4))
    (directory / "sub").mkdir()
    (directory / "sub" / "items.json").write_text(json.dumps(["a", "b", "c"]))


def test_write_renames_a_complete_directory_into_place_with_a_manifest(tmp_path: Path) -> None:
    store = ArtefactStore(tmp_path)
    manifest = store.write(
        "ease", "v1", save_arrays, data_snapshot={"n_events": 10}, metrics={"ndcg@20": 0.1}, extra={"note": "x"}
    )
    directory = store.directory("ease", "v1")
    assert directory == tmp_path / "ease" / "v1"
    assert sorted(p.name for p in directory.iterdir()) == ["B.npy", MANIFEST, "sub"]
    on_disk = json.loads((directory / MANIFEST).read_text())
    assert on_disk == manifest
    assert manifest["model"] == "ease" and manifest["version"] == "v1" and manifest["created"]
    assert manifest["data_snapshot"] == {"n_events": 10} and manifest["metrics"] == {"ndcg@20": 0.1}
    assert set(manifest["files"]) == {"B.npy", "sub/items.json"} and len(manifest["sha256"]) == 64
    assert store.verify("ease", "v1") == manifest
    assert store.verified_directory("ease", "v1") == directory
    assert store.versions_on_disk("ease") == ["v1"]
    assert [p.name for p in (tmp_path / "ease").iterdir()] == ["v1"], "no temporary directory left"
    with pytest.raises(FileExistsError):
        store.write("ease", "v1", save_arrays)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda d: (d / "B.npy").write_bytes((d / "B.npy").read_bytes()[:-8]),  # truncated
        lambda d: (d / "sub" / "items.json").write_text('["a","b","X"]'),  # same size, other bytes
        lambda d: (d / "sub" / "items.json").unlink(),  # missing
        lambda d: (d / "extra.bin").write_bytes(b"?"),  # unexpected
    ],
    ids=["truncated", "modified", "missing", "extra"],
)
def test_verify_refuses_a_directory_that_does_not_match_its_manifest(tmp_path: Path, tamper) -> None:  # type: ignore[no-untyped-def]
    store = ArtefactStore(tmp_path)
    store.write("ease", "v1", save_arrays)
    tamper(store.directory("ease", "v1"))
    with pytest.raises(ArtefactError, match="does not match its manifest"):
        store.verify("ease", "v1")
    with pytest.raises(ArtefactError):
        store.verified_directory("ease", "v1")


def test_verify_refuses_an_edited_manifest_and_a_missing_one(tmp_path: Path) -> None:
    store = ArtefactStore(tmp_path)
    store.write("ease", "v1", save_arrays)
    path = store.directory("ease", "v1") / MANIFEST
    manifest = json.loads(path.read_text())
    manifest["files"]["B.npy"]["size"] += 1
    path.write_text(json.dumps(manifest))
    with pytest.raises(ArtefactError, match="manifest's own checksum"):
        store.verify("ease", "v1")
    path.unlink()
    with pytest.raises(ArtefactError, match="no manifest"):
        store.verify("ease", "v1")
    assert store.versions_on_disk("ease") == [], "a directory without a manifest is not a version"


def test_a_save_that_fails_half_way_leaves_no_version_and_no_leftovers(tmp_path: Path) -> None:
    store = ArtefactStore(tmp_path)
    store.write("ease", "v1", save_arrays)

    def crash(directory: Path) -> None:
        np.save(directory / "B.npy", np.ones(3))
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        store.write("ease", "v2", crash)
    assert store.versions_on_disk("ease") == ["v1"]
    assert not store.directory("ease", "v2").exists()
    assert sorted(p.name for p in (tmp_path / "ease").iterdir()) == ["v1"]
    store.verify("ease", "v1")  # the previous version is intact


def test_a_process_killed_mid_write_leaves_only_a_hidden_temporary_directory(tmp_path: Path) -> None:
    script = f"""
import sys, time
from pathlib import Path
from recommender_system.storage.artefacts import ArtefactStore

def save(directory: Path) -> None:
    (directory / "part1.bin").write_bytes(b"x" * 1000)
    print("written", flush=True)
    time.sleep(60)

ArtefactStore(Path({str(tmp_path)!r})).write("ease", "v2", save)
"""
    ArtefactStore(tmp_path).write("ease", "v1", save_arrays)
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "written"
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    store = ArtefactStore(tmp_path)
    leftovers = [p.name for p in (tmp_path / "ease").iterdir() if p.name != "v1"]
    assert len(leftovers) == 1 and leftovers[0].startswith(".tmp-v2-")
    assert store.versions_on_disk("ease") == ["v1"] and not store.exists("ease", "v2")
    assert store.clean_temporary("ease", older_than_seconds=3600) == [], "a recent write may still be running"
    assert store.clean_temporary("ease", older_than_seconds=0) == leftovers
    assert sorted(p.name for p in (tmp_path / "ease").iterdir()) == ["v1"]


def test_prune_keeps_the_newest_and_the_protected_versions(tmp_path: Path) -> None:
    store = ArtefactStore(tmp_path)
    for version in ("v1", "v2", "v3", "v4", "v5"):
        store.write("ease", version, save_arrays)
    removed = store.prune("ease", ["v5", "v4", "v3", "v2", "v1"], keep=2, protect=["v1"])
    assert sorted(removed) == ["v2", "v3"]
    assert store.versions_on_disk("ease") == ["v1", "v4", "v5"]
    assert store.remove("ease", "v4") and not store.remove("ease", "v4")
    assert store.versions_on_disk("ease") == ["v1", "v5"]


def test_names_cannot_escape_the_root(tmp_path: Path) -> None:
    store = ArtefactStore(tmp_path)
    for bad in ("..", "../x", ".hidden", "a/b", ""):
        with pytest.raises(ValueError):
            store.directory("ease", bad)
    with pytest.raises(ValueError):
        store.directory("../ease", "v1")


def test_clean_temporary_ignores_young_leftovers(tmp_path: Path) -> None:
    store = ArtefactStore(tmp_path)
    old = tmp_path / "ease" / ".tmp-v9-abcd"
    old.mkdir(parents=True)
    past = time.time() - 7200
    os.utime(old, (past, past))
    (tmp_path / "ease" / ".tmp-v10-young").mkdir()
    assert store.clean_temporary("ease", older_than_seconds=3600) == [".tmp-v9-abcd"]
    assert [p.name for p in (tmp_path / "ease").iterdir()] == [".tmp-v10-young"]
