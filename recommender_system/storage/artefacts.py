"""Model artefacts on disk: one directory per version, written atomically, with a checksummed manifest.

Layout: ``<root>/<model>/<version>/`` holds the files a model's ``save`` wrote plus ``manifest.json``. A version
is first written into a hidden sibling (``<root>/<model>/.tmp-<version>-<random>``) and renamed into place once
every file and the manifest are on disk, so a crash mid-write never leaves a directory that looks like a version:
only names without a leading dot are versions. Removal is the reverse (rename to a hidden name, then delete).

``manifest.json``::

    {"model": "ease", "version": "20240101T120000-1a2b", "created": "2024-01-01T12:00:00",
     "data_snapshot": {...}, "metrics": {...}, "files": {"B.npy": {"sha256": "...", "size": 123}},
     "sha256": "<digest of the sorted file list and their digests>"}

Web processes call ``verify`` before loading a version, so a truncated or tampered file is refused (and the
process keeps serving what it has) instead of being half-loaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from recommender_system.storage.tables import utcnow

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
TEMPORARY_PREFIX = ".tmp-"
REMOVED_PREFIX = ".removed-"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")
_CHUNK = 1 << 20


class ArtefactError(RuntimeError):
    """An artefact is missing, incomplete or does not match its manifest."""


def _check_name(kind: str, value: str) -> str:
    if not _NAME.match(value) or value in (".", ".."):
        raise ValueError(f"invalid {kind} {value!r}: letters, digits, '_', '-', '.' only, not starting with '.'")
    return value


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _checksums(directory: Path) -> dict[str, dict[str, Any]]:
    """sha256 and size of every regular file under ``directory`` but the manifest, by POSIX relative path."""
    files: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.rglob("*")):
        if not path.is_file():
            continue
        relative = path.relative_to(directory).as_posix()
        if relative == MANIFEST:
            continue
        files[relative] = {"sha256": file_sha256(path), "size": path.stat().st_size}
    return files


def _overall_digest(files: Mapping[str, Mapping[str, Any]]) -> str:
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(f"{name}\0{files[name]['sha256']}\0{files[name]['size']}\n".encode())
    return digest.hexdigest()


def _fsync_tree(directory: Path) -> None:
    """Flush every file and the directory itself, so a power loss after the rename cannot expose empty files."""
    for path in directory.rglob("*"):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
    _fsync_directory(directory)


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory descriptors
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


class ArtefactStore:
    """Versioned artefact directories under ``root`` (``RS_ARTEFACT_DIR``)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    # --- paths ------------------------------------------------------------------------------------------------
    def model_directory(self, model_name: str) -> Path:
        return self.root / _check_name("model name", model_name)

    def directory(self, model_name: str, version: str) -> Path:
        """Where the files of ``model_name`` version ``version`` live (whether or not it exists)."""
        return self.model_directory(model_name) / _check_name("version", version)

    def verified_directory(self, model_name: str, version: str) -> Path:
        """``directory`` after ``verify``: what a web process should load from (``ArtefactError`` if corrupt)."""
        self.verify(model_name, version)
        return self.directory(model_name, version)

    def exists(self, model_name: str, version: str) -> bool:
        return (self.directory(model_name, version) / MANIFEST).is_file()

    def versions_on_disk(self, model_name: str) -> list[str]:
        """Complete versions (with a manifest) of a model, sorted by name; temporary directories never appear."""
        base = self.model_directory(model_name)
        if not base.is_dir():
            return []
        return sorted(
            child.name
            for child in base.iterdir()
            if child.is_dir() and not child.name.startswith(".") and (child / MANIFEST).is_file()
        )

    # --- writing ----------------------------------------------------------------------------------------------
    def write(
        self,
        model_name: str,
        version: str,
        save: Callable[[Path], None],
        *,
        data_snapshot: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Write a new version: ``save(directory)`` fills a private temporary directory, then the manifest is added
        and the directory is renamed to ``<model>/<version>`` in one step. Returns the manifest.

        Any exception (or interruption) on the way removes the temporary directory and propagates; the final
        name then does not exist. Raises ``FileExistsError`` when the version already exists.
        """
        final = self.directory(model_name, version)
        if final.exists():
            raise FileExistsError(f"artefact {model_name}/{version} already exists")
        final.parent.mkdir(parents=True, exist_ok=True)
        temporary = final.parent / f"{TEMPORARY_PREFIX}{version}-{uuid.uuid4().hex[:8]}"
        temporary.mkdir()
        try:
            save(temporary)
            files = _checksums(temporary)
            if not files:
                raise ArtefactError(f"{model_name}: save() wrote no file")
            manifest: dict[str, Any] = {
                "model": model_name,
                "version": version,
                "created": utcnow().isoformat(timespec="seconds"),
                "data_snapshot": dict(data_snapshot or {}),
                "metrics": dict(metrics or {}),
                **dict(extra or {}),
                "files": files,
                "sha256": _overall_digest(files),
            }
            (temporary / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
            _fsync_tree(temporary)
            os.rename(temporary, final)  # atomic on one file system; fails if ``final`` appeared meanwhile
            _fsync_directory(final.parent)
        except BaseException:
            shutil.rmtree(temporary, ignore_errors=True)
            raise
        logger.info(
            "artefact %s/%s written: %d file(s), %.1f MB",
            model_name,
            version,
            len(files),
            sum(f["size"] for f in files.values()) / 2**20,
        )
        return manifest

    # --- reading ----------------------------------------------------------------------------------------------
    def manifest(self, model_name: str, version: str) -> dict[str, Any]:
        """The manifest of a version (``ArtefactError`` when it is missing or unreadable)."""
        path = self.directory(model_name, version) / MANIFEST
        try:
            manifest: dict[str, Any] = json.loads(path.read_text())
        except FileNotFoundError as error:
            raise ArtefactError(f"artefact {model_name}/{version} has no manifest at {path}") from error
        except (OSError, ValueError) as error:
            raise ArtefactError(f"artefact {model_name}/{version}: unreadable manifest ({error})") from error
        return manifest

    def verify(self, model_name: str, version: str) -> dict[str, Any]:
        """Check every file against the manifest (names, sizes, sha256) and return the manifest.

        Raises ``ArtefactError`` on any mismatch: a missing, extra, truncated or modified file, or a manifest
        that names another model or version.
        """
        directory = self.directory(model_name, version)
        manifest = self.manifest(model_name, version)
        if manifest.get("model") != model_name or manifest.get("version") != version:
            raise ArtefactError(
                f"artefact {model_name}/{version}: manifest names {manifest.get('model')}/{manifest.get('version')}"
            )
        expected: dict[str, Any] = manifest.get("files") or {}
        if _overall_digest(expected) != manifest.get("sha256"):
            raise ArtefactError(f"artefact {model_name}/{version}: the manifest's own checksum does not match")
        actual = _checksums(directory)
        missing = sorted(set(expected) - set(actual))
        extra = sorted(set(actual) - set(expected))
        changed = sorted(
            name
            for name in set(expected) & set(actual)
            if expected[name].get("sha256") != actual[name]["sha256"]
            or expected[name].get("size") != actual[name]["size"]
        )
        if missing or extra or changed:
            raise ArtefactError(
                f"artefact {model_name}/{version} does not match its manifest: "
                f"missing {missing}, unexpected {extra}, changed {changed}"
            )
        return manifest

    # --- removal ----------------------------------------------------------------------------------------------
    def remove(self, model_name: str, version: str) -> bool:
        """Delete a version's directory (renamed away first, so it stops being a version at once)."""
        final = self.directory(model_name, version)
        if not final.exists():
            return False
        doomed = final.parent / f"{REMOVED_PREFIX}{version}-{uuid.uuid4().hex[:8]}"
        os.rename(final, doomed)
        shutil.rmtree(doomed, ignore_errors=True)
        logger.info("artefact %s/%s removed", model_name, version)
        return True

    def prune(self, model_name: str, newest_first: Iterable[str], keep: int, protect: Iterable[str] = ()) -> list[str]:
        """Keep the first ``keep`` versions of ``newest_first`` plus every protected one (the current version);
        delete the other complete versions of that model from disk. Returns the removed versions.

        Versions on disk that ``newest_first`` does not list (e.g. written by a training that never got recorded)
        are removed too once they are older than every kept version (their names sort by creation time).
        """
        if keep < 1:
            raise ValueError("keep must be >= 1")
        ordered = list(newest_first)
        kept = set(ordered[:keep]) | set(protect)
        on_disk = self.versions_on_disk(model_name)
        oldest_kept = min(kept & set(on_disk), default=None)
        removed: list[str] = []
        for version in on_disk:
            if version in kept:
                continue
            if version not in ordered and (oldest_kept is None or version > oldest_kept):
                continue  # an unrecorded version newer than what we keep: leave it to its writer
            if self.remove(model_name, version):
                removed.append(version)
        return removed

    def clean_temporary(self, model_name: str, older_than_seconds: float) -> list[str]:
        """Delete leftovers of interrupted writes/removals (hidden directories) older than the given age."""
        base = self.model_directory(model_name)
        if not base.is_dir():
            return []
        cutoff = time.time() - older_than_seconds
        cleaned = []
        for child in base.iterdir():
            if not (child.name.startswith(TEMPORARY_PREFIX) or child.name.startswith(REMOVED_PREFIX)):
                continue
            try:
                if child.stat().st_mtime < cutoff:
                    shutil.rmtree(child, ignore_errors=True)
                    cleaned.append(child.name)
            except FileNotFoundError:
                continue
        if cleaned:
            logger.info("removed %d interrupted artefact write(s) of %s", len(cleaned), model_name)
        return cleaned
