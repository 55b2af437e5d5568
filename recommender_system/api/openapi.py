"""``GET /openapi.json``: an OpenAPI 3.1 document of every route, and ``GET /docs``: the same document as HTML.

Nothing here copies a schema by hand. The document is assembled from the app's URL map (so every route appears)
and the route table below, which only *names* the pydantic schemas that validate each request and shape each answer
(``"<module in api/schemas>:<class>"``). Their JSON Schemas come from pydantic (``models_json_schema``), and every
model of every module under ``recommender_system/api/schemas/`` is added to ``components.schemas``, so a new schema
module is picked up without touching this file. A route missing from the table is still documented (its summary
is the view's docstring).
"""

from __future__ import annotations

import html
import importlib
import json
import logging
import pkgutil
import re
from dataclasses import dataclass
from importlib import metadata
from types import ModuleType
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, render_template
from markupsafe import Markup
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from recommender_system.api import schemas as schemas_package
from recommender_system.prediction.config import PipelineConfig

logger = logging.getLogger(__name__)

blueprint = Blueprint("openapi", __name__)

REF_TEMPLATE = "#/components/schemas/{model}"
SCHEMAS_PACKAGE = schemas_package.__name__
INGEST_ONE = "@ingest-one"
INGEST_MANY = "@ingest-many"
JSON = "application/json"
HTML = "text/html"
TEXT = "text/plain"


@dataclass(frozen=True)
class RouteDoc:
    """What the route table says about one route: schema names, never schemas."""

    summary: str
    tag: str
    query: str | None = None
    body: str | None = None
    response: str | None = None
    content_type: str = JSON
    errors: tuple[int, ...] = (400,)


ROUTES: dict[tuple[str, str], RouteDoc] = {
    ("GET", "/"): RouteDoc(
        "Liveness (the Docker healthcheck): 200 with an empty body", "health", content_type=TEXT, errors=()
    ),
    ("GET", "/ready"): RouteDoc(
        "Readiness: the database is reachable and migrated (503 otherwise)", "health", errors=()
    ),
    ("POST", "/store_object"): RouteDoc(
        "Store one object named by its _model_class (catalogue, event, Config, TrainerQueueItem)",
        "ingest",
        body=INGEST_ONE,
        response="common:StoredResponse",
    ),
    ("POST", "/store_objects"): RouteDoc(
        "Store a JSON array of objects, all or nothing", "ingest", body=INGEST_MANY, response="common:StoredResponse"
    ),
    ("POST", "/predict"): RouteDoc(
        "Ranked product-variant SKUs for one page",
        "predict",
        body="predict:PredictRequest",
        response="predict:PredictResponse",
    ),
    ("POST", "/predict/product_positions"): RouteDoc(
        "Product id -> position, to sort a whole category page",
        "predict",
        body="predict:ProductPositionsRequest",
        response="predict:ProductPositionsResponse",
    ),
    ("GET", "/dashboard/configuration"): RouteDoc(
        "Every model with its state, the config in force and its field titles (ecoseller dashboard)",
        "dashboard",
        response="dashboard:ConfigurationResponse",
        errors=(),
    ),
    ("GET", "/dashboard/performance"): RouteDoc(
        "Online metrics @10 over a window, overall and per model (ecoseller dashboard)",
        "dashboard",
        query="dashboard:DateWindowQuery",
        response="dashboard:PerformanceResponse",
    ),
    ("GET", "/dashboard/training"): RouteDoc(
        "Training statistics over a window, overall and per model (ecoseller dashboard)",
        "dashboard",
        query="dashboard:DateWindowQuery",
        response="dashboard:TrainingResponse",
    ),
    ("GET", "/ui"): RouteDoc("Redirect to the built-in dashboard page", "dashboard page", content_type=HTML, errors=()),
    ("GET", "/ui/"): RouteDoc(
        "The built-in dashboard page (log in once with ?token=<RS_API_TOKEN> when a token is set)",
        "dashboard page",
        content_type=HTML,
        errors=(),
    ),
    ("GET", "/ui/api/timeseries"): RouteDoc(
        "Metrics per hour or day, per model or page type",
        "dashboard page",
        query="dashboard:TimeSeriesQuery",
        response="dashboard:TimeSeriesResponse",
    ),
    ("GET", "/ui/api/runs"): RouteDoc(
        "The newest training runs",
        "dashboard page",
        query="dashboard:RunsQuery",
        response="dashboard:TrainingRunsResponse",
    ),
    ("GET", "/ui/api/versions"): RouteDoc(
        "Kept versions of the trained models", "dashboard page", response="dashboard:VersionsResponse", errors=()
    ),
    ("POST", "/ui/api/rollback"): RouteDoc(
        "Serve another kept version of a trained model",
        "dashboard page",
        body="dashboard:RollbackRequest",
        response="dashboard:RollbackResponse",
        errors=(400, 404, 409),
    ),
    ("GET", "/metrics"): RouteDoc(
        "Prometheus metrics (text exposition format)", "operations", content_type="text/plain; version=0.0.4", errors=()
    ),
    ("GET", "/openapi.json"): RouteDoc("This OpenAPI document", "operations", errors=()),
    ("GET", "/docs"): RouteDoc("This OpenAPI document as a page", "operations", content_type=HTML, errors=()),
    ("GET", "/static/<path:filename>"): RouteDoc(
        "Scripts, styles and the vendored chart library of the dashboard pages",
        "dashboard page",
        content_type="application/octet-stream",
        errors=(404,),
    ),
}


# ------------------------------------------------------------------------------------------------ schemas
def schema_modules() -> list[ModuleType]:
    """Every module of ``recommender_system.api.schemas``."""
    found = []
    for info in sorted(pkgutil.iter_modules(schemas_package.__path__), key=lambda i: i.name):
        try:
            found.append(importlib.import_module(f"{SCHEMAS_PACKAGE}.{info.name}"))
        except Exception:  # a half-written module of a colleague must not take the docs down
            logger.exception("openapi: cannot import %s.%s", SCHEMAS_PACKAGE, info.name)
    return found


def schema_models() -> dict[str, type[BaseModel]]:
    """``"<module>:<class>"`` -> every public pydantic model defined in a schema module, plus ``config:PipelineConfig``
    (the body of ``_model_class: "Config"``)."""
    models: dict[str, type[BaseModel]] = {"config:PipelineConfig": PipelineConfig}
    for module in schema_modules():
        short = module.__name__.rsplit(".", 1)[-1]
        for name, value in vars(module).items():
            if (
                isinstance(value, type)
                and issubclass(value, BaseModel)
                and value.__module__ == module.__name__
                and not name.startswith("_")
                and not value.__pydantic_generic_metadata__.get("parameters")
            ):
                models[f"{short}:{name}"] = value
    return models


def _documentable(model: type[BaseModel], mode: JsonSchemaMode) -> bool:
    try:
        model.model_json_schema(mode=mode)
    except Exception as error:  # a type without a JSON Schema: leave it out, say so
        logger.warning("openapi: %s has no %s JSON schema: %s", model.__name__, mode, error)
        return False
    return True


def _ingest_schemas() -> dict[str, type[BaseModel]]:
    """``_model_class`` -> schema of ``/store_object`` (empty until the ingest schemas exist)."""
    try:
        module = importlib.import_module(f"{SCHEMAS_PACKAGE}.ingest")
    except Exception:
        return {}
    found = dict(getattr(module, "SCHEMAS", {}))
    found[getattr(module, "CONFIG_CLASS", "Config")] = PipelineConfig
    return found


# ------------------------------------------------------------------------------------------------ document
def _openapi_path(rule: str) -> tuple[str, list[str]]:
    names: list[str] = []

    def replace(match: re.Match[str]) -> str:
        names.append(match.group(1))
        return "{" + match.group(1) + "}"

    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", replace, rule), names


def _doc_of(view: Any) -> tuple[str, str]:
    text = (getattr(view, "__doc__", None) or "").strip()
    first, _, rest = text.partition("\n")
    return first.strip(), " ".join(line.strip() for line in rest.splitlines()).strip()


def build_document(app: Flask) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``app``."""
    models = schema_models()
    ingest = _ingest_schemas()
    wanted: set[tuple[type[BaseModel], JsonSchemaMode]] = {(m, "validation") for m in models.values()}
    for doc in ROUTES.values():
        if doc.response in models:
            wanted.add((models[doc.response], "serialization"))
    wanted |= {(m, "validation") for m in ingest.values()}
    pairs = sorted((p for p in wanted if _documentable(*p)), key=lambda p: (p[0].__module__, p[0].__qualname__, p[1]))
    key_map, definitions = models_json_schema(pairs, ref_template=REF_TEMPLATE)
    components = definitions.get("$defs", {})

    def ref(name: str | None, mode: JsonSchemaMode) -> dict[str, Any] | None:
        model = models.get(name) if name else None
        if model is None or (model, mode) not in key_map:
            return None
        return dict(key_map[(model, mode)])

    def component(reference: dict[str, Any]) -> dict[str, Any]:
        return components.get(reference["$ref"].rsplit("/", 1)[-1], {})

    def ingest_item() -> dict[str, Any]:
        options = []
        for class_name, model in sorted(ingest.items()):
            if (model, "validation") not in key_map:
                continue
            options.append(
                {
                    "allOf": [
                        dict(key_map[(model, "validation")]),
                        {
                            "type": "object",
                            "properties": {"_model_class": {"const": class_name}},
                            "required": ["_model_class"],
                        },
                    ]
                }
            )
        return {"anyOf": options} if options else {"type": "object", "required": ["_model_class"]}

    error_ref = ref("common:ErrorResponse", "validation")
    paths: dict[str, dict[str, Any]] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        path, path_params = _openapi_path(rule.rule)
        view = app.view_functions.get(rule.endpoint)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            doc = ROUTES.get((method, rule.rule))
            summary, description = _doc_of(view)
            operation: dict[str, Any] = {
                "operationId": re.sub(r"[^A-Za-z0-9_]", "_", f"{rule.endpoint}_{method.lower()}"),
                "summary": (doc.summary if doc else summary) or rule.rule,
                "tags": [doc.tag if doc else rule.endpoint.split(".", 1)[0]],
            }
            if description or (doc and summary):
                operation["description"] = " ".join(part for part in (summary if doc else "", description) if part)
            parameters = [
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}} for name in path_params
            ]
            query = ref(doc.query, "validation") if doc else None
            if query is not None:
                target = component(query)
                required = set(target.get("required", []))
                for name, schema in target.get("properties", {}).items():
                    schema = dict(schema)
                    parameter = {"name": name, "in": "query", "required": name in required}
                    if "description" in schema:
                        parameter["description"] = schema.pop("description")
                    parameter["schema"] = schema
                    parameters.append(parameter)
            if parameters:
                operation["parameters"] = parameters
            body: dict[str, Any] | None = None
            if doc and doc.body == INGEST_ONE:
                body = ingest_item()
            elif doc and doc.body == INGEST_MANY:
                body = {"type": "array", "items": ingest_item()}
            elif doc and doc.body:
                body = ref(doc.body, "validation")
            if body is not None:
                operation["requestBody"] = {"required": True, "content": {JSON: {"schema": body}}}
            content_type = doc.content_type if doc else JSON
            success: dict[str, Any] = {"description": "OK"}
            response_schema = ref(doc.response, "serialization") if doc else None
            if response_schema is not None:
                success["content"] = {content_type: {"schema": response_schema}}
            elif content_type != JSON or doc is None:
                success["content"] = {content_type: {"schema": {"type": "string"}}}
            else:
                success["content"] = {JSON: {"schema": {"type": "object"}}}
            responses: dict[str, Any] = {"200": success}
            for status in doc.errors if doc else (400,):
                responses[str(status)] = _error_response(status, error_ref)
            responses["500"] = _error_response(500, error_ref)
            if app.container.settings().api_token and rule.rule != "/":  # type: ignore[attr-defined]
                responses["401"] = _error_response(401, error_ref)
            if rule.rule == "/":
                operation["security"] = []
            operation["responses"] = responses
            paths.setdefault(path, {})[method.lower()] = operation
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "Recommender system",
            "version": _version(),
            "description": "A recommender service for e-commerce shops, drop-in compatible with the ecoseller "
            'recommender. Every error is JSON: {"error", "details"}.',
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "RS_API_TOKEN"},
                "dashboardCookie": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": "rs_ui",
                    "description": "set by opening /ui/?token=<RS_API_TOKEN> once",
                },
            },
        },
    }
    if app.container.settings().api_token:  # type: ignore[attr-defined]
        document["security"] = [{"bearer": []}, {"dashboardCookie": []}]
    return document


_ERROR_TEXT = {
    400: "Bad input (JSON error body)",
    401: "Missing or wrong API token",
    404: "Not found",
    409: "Conflict",
    500: "A fault of the service",
}


def _error_response(status: int, error_ref: dict[str, Any] | None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": _ERROR_TEXT.get(status, "Error")}
    if error_ref is not None:
        response["content"] = {JSON: {"schema": error_ref}}
    return response


def _version() -> str:
    try:
        return metadata.version("recommender-system")
    except metadata.PackageNotFoundError:
        return "0.1.0"


def document_of(app: Flask) -> dict[str, Any]:
    """The app's document, built once."""
    cached = app.extensions.get("rs_openapi")
    if cached is None:
        cached = app.extensions["rs_openapi"] = build_document(app)
    return cached


# ------------------------------------------------------------------------------------------------ routes
@blueprint.get("/openapi.json")
def openapi_json() -> Response:
    """This service's OpenAPI 3.1 document."""
    return jsonify(document_of(current_app))


def _schema_html(schema: Any) -> Markup:
    """Pretty JSON with every ``$ref`` a link to its schema (escaped first, so nothing in it is markup)."""
    escaped = html.escape(json.dumps(schema, indent=2, ensure_ascii=False))
    linked = re.sub(
        r"&quot;#/components/schemas/([A-Za-z0-9_.\-]+)&quot;",
        lambda m: f'&quot;<a href="#schema-{m.group(1)}">#/components/schemas/{m.group(1)}</a>&quot;',
        escaped,
    )
    return Markup(linked)  # noqa: S704 - built from escaped text


@blueprint.get("/docs")
def docs() -> str:
    """The OpenAPI document rendered as a page."""
    document = document_of(current_app)
    operations = []
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            body = operation.get("requestBody", {}).get("content", {}).get(JSON, {}).get("schema")
            responses = []
            for status, response in operation["responses"].items():
                content = response.get("content", {})
                media, spec = next(iter(content.items()), (None, {}))
                responses.append(
                    {
                        "status": status,
                        "description": response.get("description", ""),
                        "media": media,
                        "schema": _schema_html(spec.get("schema")) if spec.get("schema") else None,
                    }
                )
            operations.append(
                {
                    "id": operation["operationId"],
                    "method": method.upper(),
                    "path": path,
                    "tag": operation["tags"][0],
                    "summary": operation.get("summary", ""),
                    "description": operation.get("description", ""),
                    "parameters": operation.get("parameters", []),
                    "body": _schema_html(body) if body else None,
                    "responses": responses,
                }
            )
    tags: dict[str, list[dict[str, Any]]] = {}
    for operation in operations:
        tags.setdefault(operation["tag"], []).append(operation)
    schemas = [(name, _schema_html(schema)) for name, schema in sorted(document["components"]["schemas"].items())]
    return render_template("docs.html", info=document["info"], tags=tags, schemas=schemas)
