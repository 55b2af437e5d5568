"""``GET /`` (liveness, the Docker healthcheck) and ``GET /ready`` (database reachable and migrated)."""

from __future__ import annotations

from dependency_injector.wiring import Provide, inject
from flask import Blueprint, Response, jsonify
from sqlalchemy import text

from recommender_system.container import Container
from recommender_system.settings import Settings
from recommender_system.storage import migrate
from recommender_system.storage.database import Database

blueprint = Blueprint("health", __name__)


@blueprint.get("/")
def live() -> Response:
    return Response("", status=200)


@blueprint.get("/ready")
@inject
def ready(
    database: Database = Provide[Container.database],
    settings: Settings = Provide[Container.settings],
) -> tuple[Response, int]:
    try:
        with database.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        migrated = migrate.is_migrated(database.engine, settings.database_url)
    except Exception as error:  # noqa: BLE001 - any failure means not ready
        return jsonify({"ready": False, "database": False, "error": type(error).__name__}), 503
    if not migrated:
        return jsonify({"ready": False, "database": True, "migrated": False}), 503
    return jsonify({"ready": True, "database": True, "migrated": True}), 200
