"""Publishing, pruning and rolling back versions of trained models.

A version is published in one unit of work (recorded, made current, the ``models`` revision bumped), after its
artefact directory was completely written; web processes notice the revision within a few seconds and load the
new version off the request path. The last ``keep_versions`` versions stay on disk (plus the current one, even if
an operator rolled back to an older one), so ``rollback`` can switch back at once.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from recommender_system.prediction.models.registry import SPECS, TRAINABLE_MODEL_NAMES
from recommender_system.storage.artefacts import ArtefactError, ArtefactStore
from recommender_system.storage.database import Database
from recommender_system.storage.tables import utcnow
from recommender_system.storage.training import StoredVersion, TrainingStore

if TYPE_CHECKING:
    from recommender_system.container import Container

logger = logging.getLogger(__name__)


def new_version_name() -> str:
    """A unique version name that sorts by creation time, e.g. ``20240131T120501-3f9a``."""
    return f"{utcnow():%Y%m%dT%H%M%S}-{secrets.token_hex(2)}"


@dataclass(frozen=True)
class Published:
    model_name: str
    version: str
    previous: str | None
    removed: tuple[str, ...]


def _check_model(model_name: str) -> None:
    if model_name not in SPECS:
        raise LookupError(f"unknown model {model_name!r}; trained models are {', '.join(TRAINABLE_MODEL_NAMES)}")
    if not SPECS[model_name].trainable:
        raise LookupError(
            f"{model_name} is not a trained model and has no versions; "
            f"trained models are {', '.join(TRAINABLE_MODEL_NAMES)}"
        )


class VersionManager:
    """Publishes new versions, prunes old ones and rolls back; the files live in ``ArtefactStore``."""

    def __init__(
        self,
        database: Database,
        training_store: TrainingStore,
        artefact_store: ArtefactStore,
        keep_versions: int = 3,
    ) -> None:
        self.database = database
        self.training_store = training_store
        self.artefact_store = artefact_store
        self.keep_versions = keep_versions

    def publish(self, model_name: str, version: str, manifest: dict[str, Any], run_id: int | None = None) -> Published:
        """Record a written artefact and serve it; then prune the versions beyond ``keep_versions``."""
        directory = self.artefact_store.directory(model_name, version)
        if not self.artefact_store.exists(model_name, version):
            raise ArtefactError(f"cannot publish {model_name}/{version}: {directory} is not a complete artefact")
        with self.database.write_session() as session:
            previous = self.training_store.current_version(session, model_name)
            self.training_store.record_version(
                session, model_name, version, str(directory), run_id=run_id, manifest=manifest
            )
            self.training_store.set_current(session, model_name, version)
        logger.info("published %s version %s (previous: %s)", model_name, version, previous or "none")
        try:
            removed = self.prune(model_name)
        except Exception:  # noqa: BLE001 - the version is published; pruning is retried at the next publish
            logger.exception("%s: pruning old versions failed", model_name)
            removed = []
        return Published(model_name, version, previous, tuple(removed))

    def prune(self, model_name: str) -> list[str]:
        """Delete the files of versions beyond the newest ``keep_versions`` (never the current one)."""
        with self.database.session() as session:
            newest_first = [v.version for v in self.training_store.versions(session, model_name)]
            current = self.training_store.current_version(session, model_name)
        removed = self.artefact_store.prune(
            model_name, newest_first, self.keep_versions, protect=[current] if current else []
        )
        # versions whose files are already gone (deleted by hand, lost volume) are recorded as removed too
        on_disk = set(self.artefact_store.versions_on_disk(model_name))
        gone = [v for v in newest_first if v not in on_disk and v != current]
        doomed = sorted(set(removed) | set(gone))
        if doomed:
            with self.database.write_session() as session:
                self.training_store.mark_removed(session, model_name, doomed)
            logger.info("%s: removed old version(s) %s", model_name, ", ".join(doomed))
        return removed

    def kept_versions(self, model_name: str) -> list[StoredVersion]:
        """Recorded versions whose files are still on disk, newest first."""
        with self.database.session() as session:
            versions = self.training_store.versions(session, model_name)
        return [v for v in versions if self.artefact_store.exists(model_name, v.version)]

    def rollback(self, model_name: str, version: str | None = None) -> str:
        """Serve an older kept version (default: the one published before the current one). Returns it.

        Raises ``LookupError`` for an unknown model, a model without versions or an unknown/removed version, and
        ``ArtefactError`` when the version's files do not match their manifest.
        """
        _check_model(model_name)
        kept = self.kept_versions(model_name)
        with self.database.session() as session:
            current = self.training_store.current_version(session, model_name)
        names = [v.version for v in kept]
        if not kept:
            raise LookupError(f"{model_name} has no trained version on disk to roll back to")
        if version is None:
            if current is None or current not in names:
                raise LookupError(
                    f"{model_name} serves no kept version; name the version to serve, one of: {', '.join(names)}"
                )
            index = names.index(current)
            if index + 1 >= len(names):
                raise LookupError(
                    f"{model_name} version {current} is the oldest kept version; nothing older to roll back to"
                )
            version = names[index + 1]
        elif version not in names:
            raise LookupError(
                f"{model_name} has no kept version {version!r}; kept versions (newest first): {', '.join(names)}"
            )
        self.artefact_store.verify(model_name, version)
        with self.database.write_session() as session:
            self.training_store.set_current(session, model_name, version)
        logger.info("%s rolled back from %s to %s", model_name, current or "none", version)
        return version


def rollback(container: Container, model_name: str, version: str | None = None) -> str:
    """``python -m recommender_system rollback MODEL [VERSION]``: serve an older kept version; returns it."""
    manager: VersionManager = container.version_manager()
    try:
        return manager.rollback(model_name, version)
    except ArtefactError as error:  # the CLI reports ValueErrors as a clear message with exit status 2
        raise ValueError(f"rollback refused: {error}") from error
