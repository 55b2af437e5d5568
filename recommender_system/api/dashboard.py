"""The ecoseller dashboard routes: ``GET /dashboard/configuration``, ``/dashboard/performance``, ``/dashboard/training``
(exact shapes: notes 1.7), and the start-up hook of the monitoring side of the web process."""

from __future__ import annotations

import logging
from typing import Any

from dependency_injector.wiring import Provide, inject
from flask import Blueprint, Flask, Response, jsonify, request
from pydantic import BaseModel

from recommender_system.api.schemas.dashboard import (
    ConfigurationResponse,
    DateWindowQuery,
    PerformanceResponse,
    TrainingResponse,
)
from recommender_system.container import Container
from recommender_system.managers.monitoring import MonitoringManager

logger = logging.getLogger(__name__)

blueprint = Blueprint("dashboard", __name__)


def send(schema: BaseModel) -> Response:
    """A response schema as JSON, camelCase keys, in declaration order."""
    return jsonify(schema.model_dump(mode="json", by_alias=True))


def window() -> DateWindowQuery:
    """``date_from`` / ``date_to`` of the query string (400 when missing or not ISO-8601)."""
    return DateWindowQuery.model_validate(request.args.to_dict())


@blueprint.get("/dashboard/configuration")
@inject
def configuration(manager: MonitoringManager = Provide[Container.monitoring_manager]) -> Response:
    """Every model with its state, the config in force and the titles of its fields (dates are ignored)."""
    return send(ConfigurationResponse.of(manager.configuration()))


@blueprint.get("/dashboard/performance")
@inject
def performance(manager: MonitoringManager = Provide[Container.monitoring_manager]) -> Response:
    """Hit rate, future hit rate and coverage @10, predictions and durations, overall and per model."""
    query = window()
    return send(PerformanceResponse.of(manager.performance(query.date_from, query.date_to)))


@blueprint.get("/dashboard/training")
@inject
def training(manager: MonitoringManager = Provide[Container.monitoring_manager]) -> Response:
    """Training runs started in the window: started/completed/failed, durations and peak memory."""
    query = window()
    return send(TrainingResponse.of(manager.training(query.date_from, query.date_to)))


def install_monitoring(app: Flask, container: Any) -> None:
    """Start-up hook: request metrics and the browser login of the built-in page.

    The rollups behind the dashboard are folded in the background by the trainer process (``python -m trainer``),
    never by a web worker, where it would take CPU and the interpreter lock from predictions; each dashboard call
    first catches up on what is new, within a time budget, so a deployment without a trainer still answers."""
    from recommender_system import metrics
    from recommender_system.api import ui

    metrics.install(app)
    ui.install(app, container.settings().api_token)
