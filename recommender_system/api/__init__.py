"""HTTP layer: blueprints that parse, make one call and serialise.

The blueprints are imported by ``blueprints()``, not at package import, so that the container's modules may import
``recommender_system.api.schemas`` without an import cycle (the views import the container).
"""

from __future__ import annotations

from flask import Blueprint


def blueprints() -> list[Blueprint]:
    from recommender_system.api import dashboard, health, ingest, openapi, predict, prometheus, ui

    return [
        health.blueprint,
        ingest.blueprint,
        predict.blueprint,
        dashboard.blueprint,
        ui.blueprint,
        prometheus.blueprint,
        openapi.blueprint,
    ]
