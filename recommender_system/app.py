"""The WSGI app factory: ``recommender_system.app:create_app()``."""

from __future__ import annotations

import hmac
import logging

from flask import Flask, request

from recommender_system.api import blueprints
from recommender_system.api.dashboard import install_monitoring
from recommender_system.api.errors import error_response, register_error_handlers
from recommender_system.api.predict import start_prediction_services
from recommender_system.api.ui import browser_allowed
from recommender_system.container import Container
from recommender_system.logs import configure_logging

logger = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/"})


def create_app(container: Container | None = None) -> Flask:
    """Build the Flask app around a container (a fresh one from the environment when none is given)."""
    container = container or Container()
    settings = container.settings()
    configure_logging(settings.log_level)
    container.wire(packages=["recommender_system.api"])

    app = Flask(__name__)
    app.container = container  # type: ignore[attr-defined]
    app.json.sort_keys = False  # type: ignore[attr-defined]
    register_error_handlers(app)
    for blueprint in blueprints():
        app.register_blueprint(blueprint)

    token = settings.api_token
    if token:
        expected = f"Bearer {token}".encode()

        @app.before_request
        def _require_token():  # type: ignore[no-untyped-def]
            if request.path in OPEN_PATHS or browser_allowed(token):  # the dashboard page's cookie login
                return None
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return error_response("missing or wrong API token (Authorization: Bearer <token>)", 401)
            return None

    app.shutdown_hooks = []  # type: ignore[attr-defined]  # callables run on a clean shutdown (hooks append)
    for hook in STARTUP_HOOKS:
        hook(app, container)
    return app


# Callables ``(app, container) -> None`` run at the end of create_app (background refreshers, log writers...).
STARTUP_HOOKS: list = [start_prediction_services, install_monitoring]
