"""``GET /openapi.json`` is a valid OpenAPI 3 document of every route, built from the pydantic schemas that
validate the requests; ``GET /docs`` renders it."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from openapi_spec_validator import validate

from recommender_system.api.openapi import ROUTES, schema_models
from recommender_system.api.schemas.dashboard import DateWindowQuery, PerformanceResponse, RollbackRequest


@pytest.fixture
def database_url(sqlite_template: Path, tmp_path: Path) -> str:
    """The document does not depend on the database: SQLite only (overrides the two-backend fixture)."""
    path = tmp_path / "test.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def document(client):  # type: ignore[no-untyped-def]
    response = client.get("/openapi.json")
    assert response.status_code == 200
    return response.get_json()


def _resolve(document, schema):  # type: ignore[no-untyped-def]
    name = schema["$ref"].rsplit("/", 1)[-1]
    return document["components"]["schemas"][name]


def test_the_document_validates_as_openapi_3(document) -> None:
    validate(document)
    assert document["openapi"].startswith("3.")


def test_every_route_of_the_app_is_documented(app, document) -> None:
    documented = {(method.upper(), path) for path, operations in document["paths"].items() for method in operations}
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}:
            assert (method, path) in documented, (method, rule.rule)
    for method, rule in ROUTES:  # the route table names no route the app lacks
        assert (method, re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)) in documented, (method, rule)
    for required in (
        ("POST", "/store_object"),
        ("POST", "/store_objects"),
        ("POST", "/predict"),
        ("POST", "/predict/product_positions"),
        ("GET", "/dashboard/configuration"),
        ("GET", "/dashboard/performance"),
        ("GET", "/dashboard/training"),
        ("GET", "/metrics"),
        ("GET", "/ui/"),
    ):
        assert required in documented


def test_schemas_come_from_the_pydantic_models(document) -> None:
    performance = document["paths"]["/dashboard/performance"]["get"]
    parameters = {p["name"]: p for p in performance["parameters"]}
    assert set(parameters) == set(DateWindowQuery.model_fields)
    assert all(p["in"] == "query" and p["required"] for p in parameters.values())
    answer = performance["responses"]["200"]["content"]["application/json"]["schema"]
    expected = PerformanceResponse.model_json_schema(mode="serialization")
    assert (
        set(_resolve(document, answer)["properties"])
        == set(expected["properties"])
        == {
            "models",
            "performance",
            "info",
        }
    )
    assert performance["responses"]["400"]["content"]["application/json"]["schema"]["$ref"].endswith("ErrorResponse")

    rollback = document["paths"]["/ui/api/rollback"]["post"]
    body = rollback["requestBody"]["content"]["application/json"]["schema"]
    assert _resolve(document, body)["required"] == RollbackRequest.model_json_schema()["required"]

    predict = document["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "recommendation_type" in _resolve(document, predict)["properties"]

    store = document["paths"]["/store_object"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    classes = {option["allOf"][1]["properties"]["_model_class"]["const"] for option in store["anyOf"]}
    assert {"ProductVariant", "ProductDetailEnter", "Config", "TrainerQueueItem"} <= classes
    assert len(classes) == 16


def test_every_schema_module_is_picked_up(document) -> None:
    models = schema_models()
    modules = {key.split(":", 1)[0] for key in models}
    assert {"dashboard", "common", "ingest", "predict", "config"} <= modules
    names = set(document["components"]["schemas"])
    for key, model in models.items():
        if model.__pydantic_generic_metadata__.get("parameters"):
            continue
        assert any(
            name == model.__name__ or name.startswith(f"{model.__name__}-") or model.__name__ in name for name in names
        ), key


def test_the_docs_page_renders_every_route(client, document) -> None:
    response = client.get("/docs")
    assert response.status_code == 200 and response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    for path in document["paths"]:
        assert f"<code>{path}</code>" in html
    assert 'id="schema-ErrorResponse"' in html
    assert "<script" not in html  # a plain server-rendered page
