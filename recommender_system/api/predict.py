"""``POST /predict`` and ``POST /predict/product_positions``: parse, ask the pipeline, serialise."""

from __future__ import annotations

import weakref
from typing import Any

from dependency_injector.wiring import Provide, inject
from flask import Blueprint, Flask, Response, jsonify

from recommender_system.api.json_body import json_body
from recommender_system.api.schemas.predict import PredictRequest, PredictResponse, ProductPositionsRequest
from recommender_system.container import Container
from recommender_system.prediction.pipeline import PredictionPipeline

blueprint = Blueprint("predict", __name__)


@blueprint.post("/predict")
@inject
def predict(pipeline: PredictionPipeline = Provide[Container.prediction_pipeline]) -> Response:
    request = PredictRequest.from_body(json_body())
    recommendation = pipeline.recommend(request.to_context())
    return jsonify(PredictResponse.body(recommendation))


@blueprint.post("/predict/product_positions")
@inject
def product_positions(pipeline: PredictionPipeline = Provide[Container.prediction_pipeline]) -> Response:
    request = ProductPositionsRequest.from_body(json_body())
    return jsonify(pipeline.product_positions(request.to_context()))


def start_prediction_services(app: Flask, container: Any) -> None:
    """Start the serving state's refresher and the prediction log writer; stop both on a clean shutdown (the
    app's shutdown hooks, interpreter exit), or when the app itself is garbage-collected (an app built and dropped
    without a shutdown, as tests do, must not leave threads polling its database)."""
    model_manager = container.model_manager()
    log_writer = container.prediction_log_writer()
    history_store = container.history_store()
    model_manager.start()
    log_writer.start()
    hooks = getattr(app, "shutdown_hooks", None)
    if hooks is not None:
        hooks.extend([model_manager.stop, log_writer.close, history_store.close])
    weakref.finalize(app, model_manager.stop)
    weakref.finalize(app, log_writer.close)
    weakref.finalize(app, history_store.close)
