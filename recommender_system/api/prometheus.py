"""``GET /metrics``: Prometheus text exposition (see ``recommender_system/metrics.py``)."""

from __future__ import annotations

from dependency_injector.wiring import Provide, inject
from flask import Blueprint, Response
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from recommender_system import metrics
from recommender_system.container import Container
from recommender_system.storage.database import Database
from recommender_system.storage.training import TrainingStore

blueprint = Blueprint("prometheus", __name__)


@blueprint.get("/metrics")
@inject
def scrape(
    database: Database = Provide[Container.database],
    training_store: TrainingStore = Provide[Container.training_store],
) -> Response:
    """Request counts and latencies per route and page type, predictions per model, errors, ingestion counts,
    served model versions and their age, training runs and failures."""
    return Response(metrics.exposition(database, training_store), mimetype=None, content_type=CONTENT_TYPE_PLAIN_0_0_4)
