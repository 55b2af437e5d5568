"""The trainer's own scheduling: which trained models need a new version now.

A model is scheduled (a pending job is requested, coalescing with any explicit request) when it is not disabled,
has no pending or running job, its data is sufficient, and

- it was never trained; or
- its newest version is older than ``training_config.refresh_hours``; or
- its input changed by at least ``training_config.changed_share`` since that version: new events relative to the
  events the version saw (models learned from shopper events), or changed catalogue rows relative to the
  variants it saw (the content-based similarity model).

The comparison uses the *newest* version (not the current one), so rolling back does not trigger a retraining by
itself. A model whose last job failed for good is not scheduled again automatically before a refresh period has
passed (an explicit request still queues it), so a broken model does not loop.

"Sufficient data" follows ecoseller's readiness rules where it had them (``ease``: more events than
``reviews_multiplier`` x variants; ``gru4rec``: more product-detail views than ``events_multiplier`` x variants)
and small floors elsewhere (similarity: two variants; als and co-occurrence: ``MIN_EVENTS`` events).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from recommender_system.prediction.config import PipelineConfig
from recommender_system.prediction.models.registry import TRAINABLE_MODEL_NAMES
from recommender_system.storage.tables import utcnow
from recommender_system.storage.training import FAILED, TrainingStore
from trainer.datasets import catalog_changes_since, data_snapshot

logger = logging.getLogger(__name__)

CATALOG_MODELS = frozenset({"similarity"})
MIN_EVENTS = 10
MIN_VARIANTS = 2


@dataclass(frozen=True)
class Decision:
    model_name: str
    train: bool
    reason: str


def sufficient_data(model_name: str, snapshot: Mapping[str, Any], config: PipelineConfig) -> tuple[bool, str]:
    """Whether there is enough data to train ``model_name``, and why (not)."""
    n_variants = int(snapshot.get("n_variants", 0))
    n_events = int(snapshot.get("n_events", 0))
    views = int(snapshot.get("events", {}).get("view", 0))
    if model_name == "similarity":
        return n_variants >= MIN_VARIANTS, f"{n_variants} variants (needs {MIN_VARIANTS})"
    if n_variants < MIN_VARIANTS:
        return False, f"{n_variants} variants (needs {MIN_VARIANTS})"
    if model_name == "gru4rec":
        needed = config.gru4rec_config.events_multiplier * n_variants
        return views > needed and views >= MIN_EVENTS, f"{views} views (needs > {needed:g})"
    if model_name == "ease":
        needed = config.ease_config.reviews_multiplier * n_variants
        return n_events > needed and n_events >= MIN_EVENTS, f"{n_events} events (needs > {needed:g})"
    return n_events >= MIN_EVENTS, f"{n_events} events (needs {MIN_EVENTS})"


def changed_share(
    session: Session, model_name: str, then: Mapping[str, Any], now: Mapping[str, Any]
) -> tuple[float, str]:
    """The share of the model's input that changed since snapshot ``then``, and a description."""
    if model_name in CATALOG_MODELS:
        changed = catalog_changes_since(session, then.get("catalog_updated_at"))
        base = max(1, int(then.get("n_variants", 0)))
        return changed / base, f"{changed} catalogue rows changed over {base} variants"
    before = int(then.get("n_events", 0))
    new = max(0, int(now.get("n_events", 0)) - before)
    return new / max(1, before), f"{new} new events over {before}"


def decide(
    session: Session,
    store: TrainingStore,
    config: PipelineConfig,
    model_names: Iterable[str] = TRAINABLE_MODEL_NAMES,
    now: datetime | None = None,
) -> list[Decision]:
    """One decision per model (``train`` true for those to schedule), each with its reason."""
    now = now or utcnow()
    snapshot = data_snapshot(session)
    open_models = store.open_job_models(session)
    refresh = timedelta(hours=config.training_config.refresh_hours)
    decisions = []
    for name in model_names:
        decisions.append(_decide_one(session, store, config, name, snapshot, open_models, refresh, now))
    return decisions


def _decide_one(
    session: Session,
    store: TrainingStore,
    config: PipelineConfig,
    name: str,
    snapshot: Mapping[str, Any],
    open_models: set[str],
    refresh: timedelta,
    now: datetime,
) -> Decision:
    if config.is_disabled(name):
        return Decision(name, False, "disabled in the configuration")
    if name in open_models:
        return Decision(name, False, "a job is already pending or running")
    enough, amount = sufficient_data(name, snapshot, config)
    if not enough:
        return Decision(name, False, f"not enough data: {amount}")
    last_job = store.last_finished_job(session, name)
    if last_job is not None and last_job.status == FAILED and last_job.finished_at is not None:
        if now - last_job.finished_at < refresh:
            return Decision(name, False, f"its last job ({last_job.id}) failed; retried after the refresh period")
    newest = store.newest_version(session, name)
    if newest is None:
        return Decision(name, True, f"never trained, enough data ({amount})")
    age = now - newest.created_at
    if age >= refresh:
        return Decision(name, True, f"version {newest.version} is {age.total_seconds() / 3600:.1f} h old")
    then = newest.manifest.get("data_snapshot") or {}
    if not then:
        return Decision(name, False, f"version {newest.version} has no data snapshot; waiting for its age")
    share, description = changed_share(session, name, then, snapshot)
    threshold = config.training_config.changed_share
    if share >= threshold:
        return Decision(name, True, f"input changed by {share:.0%} (>= {threshold:.0%}): {description}")
    return Decision(name, False, f"input changed by {share:.0%} (< {threshold:.0%}): {description}")


def request_jobs(session: Session, store: TrainingStore, decisions: Iterable[Decision]) -> dict[str, int]:
    """Request a job for every decision to train (coalescing); returns ``{model: job id}``."""
    requested: dict[str, int] = {}
    for decision in decisions:
        if decision.train:
            job_id = store.request_job(session, decision.model_name, reason=f"scheduled: {decision.reason}")
            requested[decision.model_name] = job_id
            logger.info("scheduled %s (job %d): %s", decision.model_name, job_id, decision.reason)
        else:
            logger.debug("not scheduling %s: %s", decision.model_name, decision.reason)
    return requested


def schedule(
    session: Session,
    store: TrainingStore,
    config: PipelineConfig,
    model_names: Iterable[str] = TRAINABLE_MODEL_NAMES,
    now: datetime | None = None,
) -> dict[str, int]:
    """Decide and request in one unit of work; returns ``{model: job id}`` of the requested jobs."""
    return request_jobs(session, store, decide(session, store, config, model_names, now))
