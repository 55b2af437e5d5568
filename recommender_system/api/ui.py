"""The built-in dashboard page (``GET /ui/``) and the JSON routes it reads (``/ui/api/...``).

For shops that do not run ecoseller's dashboard: charts of the online metrics over time per model and page type,
training runs, model versions with rollback, the config with enable/disable switches and cascade editing, and a
"schedule training" button. Config and training requests are saved through ``POST /store_object`` (``Config`` and
``TrainerQueueItem``), the same validated path the ecoseller backend uses.

Login when ``RS_API_TOKEN`` is set: open ``/ui/?token=<RS_API_TOKEN>`` once. The token is compared in constant
time, the answer is a redirect to the same page without the token in its address, and it sets an HttpOnly,
SameSite=Strict cookie holding an HMAC of the token (not the token). The cookie then authenticates GET requests,
and other methods only with the ``X-RS-UI: 1`` header that the page's scripts send (a cross-site form cannot).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any
from urllib.parse import urlencode

from dependency_injector.wiring import Provide, inject
from flask import Blueprint, Flask, Response, redirect, render_template, request

from recommender_system.api.dashboard import send
from recommender_system.api.errors import ApiError
from recommender_system.api.json_body import json_body
from recommender_system.api.schemas.dashboard import (
    RollbackRequest,
    RollbackResponse,
    RunsQuery,
    TimeSeriesQuery,
    TimeSeriesResponse,
    TrainingRunOut,
    TrainingRunsResponse,
    VersionOut,
    VersionsResponse,
)
from recommender_system.container import Container
from recommender_system.managers.monitoring import MonitoringManager
from recommender_system.managers.versions import VersionManager
from recommender_system.prediction.config import CASCADE_FIELDS, field_info, to_camel
from recommender_system.prediction.models.registry import SPECS, TRAINABLE_MODEL_NAMES
from recommender_system.storage.artefacts import ArtefactError
from recommender_system.storage.monitoring import K

blueprint = Blueprint("ui", __name__)

COOKIE = "rs_ui"
UI_HEADER = "X-RS-UI"
COOKIE_SECONDS = 12 * 3600
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


# ------------------------------------------------------------------------------------------------ browser login
def _cookie_value(token: str) -> str:
    return hmac.new(token.encode(), b"recommender-system dashboard session", hashlib.sha256).hexdigest()


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def browser_allowed(token: str) -> bool:
    """Whether the current request is authenticated the browser's way (used by the app's token check): the
    dashboard cookie (any method with the ``X-RS-UI`` header, safe methods without), or a GET with a valid
    ``?token=`` (answered by the login hook with the cookie and a redirect)."""
    cookie = request.cookies.get(COOKIE)
    if cookie and _same(cookie, _cookie_value(token)):
        return request.method in SAFE_METHODS or request.headers.get(UI_HEADER) == "1"
    given = request.args.get("token")
    return given is not None and request.method == "GET" and _same(given, token)


def install(app: Flask, token: str | None) -> None:
    """Register the ``?token=`` login (only when a token is configured)."""
    if not token:
        return

    @app.before_request
    def _login() -> Response | None:
        given = request.args.get("token")
        if given is None or request.method != "GET" or not _same(given, token):
            return None
        rest = [(key, value) for key, value in request.args.items(multi=True) if key != "token"]
        response = redirect(request.path + (f"?{urlencode(rest)}" if rest else ""), code=303)
        response.set_cookie(
            COOKIE,
            _cookie_value(token),
            max_age=COOKIE_SECONDS,
            path="/",
            httponly=True,
            samesite="Strict",
            secure=request.is_secure,
        )
        return response


# ------------------------------------------------------------------------------------------------ page
def page_context() -> dict[str, Any]:
    """What the page needs to draw its forms: models, which cascade each may join, config field titles."""
    info = field_info()
    cascades = [
        {
            "key": to_camel(field_name),
            "title": info[to_camel(field_name)]["title"],
            "page": page.value,
            "phase": phase.value,
            "models": [name for name, spec in SPECS.items() if name != "dummy" and spec.can(phase, page)],
        }
        for (page, phase), field_name in CASCADE_FIELDS.items()
    ]
    return {
        "k": K,
        "models": [{"name": s.name, "title": s.title, "trainable": s.trainable} for s in SPECS.values()],
        "trainable": list(TRAINABLE_MODEL_NAMES),
        "cascades": cascades,
        "pages": ["HOMEPAGE", "PRODUCT_DETAIL", "CATEGORY_LIST", "CART"],
    }


@blueprint.get("/ui")
def ui_redirect() -> Response:
    """The dashboard page lives at ``/ui/``."""
    return redirect("/ui/", code=308)


@blueprint.get("/ui/")
def page() -> str:
    """The built-in dashboard page (HTML)."""
    return render_template("dashboard.html", context=page_context())


# ------------------------------------------------------------------------------------------------ JSON routes
@blueprint.get("/ui/api/timeseries")
@inject
def timeseries(manager: MonitoringManager = Provide[Container.monitoring_manager]) -> Response:
    """Hit rate, future hit rate, coverage, predictions and latency per hour or day, per model or page type."""
    query = TimeSeriesQuery.model_validate(request.args.to_dict())
    try:
        view = manager.timeseries(
            query.date_from,
            query.date_to,
            bucket=query.bucket,
            group_by=query.group_by,
            page=None if query.page is None else query.page.value,
        )
    except ValueError as error:
        raise ApiError(str(error)) from None
    return send(TimeSeriesResponse.of(view, K))


@blueprint.get("/ui/api/runs")
@inject
def runs(manager: MonitoringManager = Provide[Container.monitoring_manager]) -> Response:
    """The newest training runs with their offline metrics, durations and peak memory."""
    query = RunsQuery.model_validate(request.args.to_dict())
    found = manager.training_runs(limit=query.limit, model_name=query.model_name)
    return send(TrainingRunsResponse(runs=[TrainingRunOut.of(run) for run in found]))


@blueprint.get("/ui/api/versions")
@inject
def versions(manager: MonitoringManager = Provide[Container.monitoring_manager]) -> Response:
    """Every kept version of every trained model, newest first, the served one marked ``current``."""
    return send(VersionsResponse(versions=[VersionOut.of(v) for v in manager.versions()]))


@blueprint.post("/ui/api/rollback")
@inject
def rollback(versions: VersionManager = Provide[Container.version_manager]) -> Response:
    """Serve another kept version of a trained model (default: the one before the current)."""
    body = RollbackRequest.model_validate(json_body())
    try:
        served = versions.rollback(body.model_name, body.version)
    except LookupError as error:
        raise ApiError(str(error), 404) from None
    except ArtefactError as error:
        raise ApiError(f"rollback refused: {error}", 409) from None
    return send(RollbackResponse(model_name=body.model_name, version=served))
