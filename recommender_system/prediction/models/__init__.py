"""The available prediction models, by name. Classes are imported lazily (GRU4Rec pulls in torch)."""

from __future__ import annotations

import importlib

from recommender_system.prediction.models.base import PredictionModel
from recommender_system.prediction.models.registry import MODEL_NAMES, SPECS

_CLASSES: dict[str, tuple[str, str]] = {
    "dummy": ("recommender_system.prediction.models.dummy", "DummyModel"),
    "selection": ("recommender_system.prediction.models.selection", "SelectionModel"),
    "popularity": ("recommender_system.prediction.models.popularity", "PopularityModel"),
    "latest": ("recommender_system.prediction.models.latest", "LatestModel"),
    "cooccurrence": ("recommender_system.prediction.models.cooccurrence", "CooccurrenceModel"),
    "similarity": ("recommender_system.prediction.models.similarity", "SimilarityModel"),
    "gru4rec": ("recommender_system.prediction.models.gru4rec", "Gru4recModel"),
    "als": ("recommender_system.prediction.models.als", "AlsModel"),
    "ease": ("recommender_system.prediction.models.ease", "EaseModel"),
}
assert set(_CLASSES) == set(MODEL_NAMES), "every registered model needs a class"


def model_class(name: str) -> type[PredictionModel]:
    """The class of a model by name (KeyError for an unknown name)."""
    module_name, class_name = _CLASSES[name]
    cls: type[PredictionModel] = getattr(importlib.import_module(module_name), class_name)
    return cls


__all__ = ["MODEL_NAMES", "SPECS", "PredictionModel", "model_class"]
