"""``POST /store_object`` (one JSON object) and ``POST /store_objects`` (a JSON array, stored all or nothing)."""

from __future__ import annotations

from dependency_injector.wiring import Provide, inject
from flask import Blueprint, Response, jsonify

from recommender_system.api.errors import ApiError
from recommender_system.api.json_body import json_body
from recommender_system.container import Container
from recommender_system.managers.data import DataManager, InvalidObject

blueprint = Blueprint("ingest", __name__)


def _body() -> object:
    try:
        return json_body()
    except RecursionError:  # json.loads on a document nested thousands of levels deep
        raise ApiError("the request body is nested too deeply to be read as JSON") from None


@blueprint.post("/store_object")
@inject
def store_object(manager: DataManager = Provide[Container.data_manager]) -> Response:
    body = _body()
    if not isinstance(body, dict):
        raise ApiError("/store_object expects one JSON object with a _model_class (use /store_objects for arrays)")
    try:
        return jsonify(manager.store_object(body))
    except InvalidObject as error:
        raise ApiError(error.message, 400, error.details) from None


@blueprint.post("/store_objects")
@inject
def store_objects(manager: DataManager = Provide[Container.data_manager]) -> Response:
    body = _body()
    if not isinstance(body, list):
        raise ApiError("/store_objects expects a JSON array of objects (use /store_object for one object)")
    try:
        return jsonify(manager.store_objects(body))
    except InvalidObject as error:
        raise ApiError(error.message, 400, error.details) from None
