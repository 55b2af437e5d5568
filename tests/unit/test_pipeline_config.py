"""PipelineConfig: the dashboard's save body, disabled models by index or name, cascade validation."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from recommender_system.domain import Page, Phase
from recommender_system.prediction.config import DEFAULT_CASCADES, PipelineConfig, field_info

MODELS = [{"name": n} for n in ("dummy", "selection", "popularity", "similarity", "gru4rec", "ease")]


def test_models_disabled_by_index_into_models() -> None:
    config = PipelineConfig.model_validate({"models": MODELS, "modelsDisabled": {"2": True, "5": False}})
    assert config.is_disabled("popularity")
    assert not config.is_disabled("ease")


def test_models_disabled_by_name_and_snake_case() -> None:
    assert PipelineConfig.model_validate({"modelsDisabled": {"ease": True}}).is_disabled("ease")
    assert PipelineConfig.model_validate({"models_disabled": {"als": True}}).is_disabled("als")


def test_edited_switches_win_over_the_loaded_map() -> None:
    """The dashboard sends back the loaded ``models_disabled`` next to its edited ``modelsDisabled``."""
    body = {"models": MODELS, "models_disabled": {}, "modelsDisabled": {"2": True}}
    assert PipelineConfig.model_validate(body).is_disabled("popularity")


def test_disabled_derived_from_models_entries() -> None:
    models = [{**m, "disabled": m["name"] == "selection"} for m in MODELS]
    assert PipelineConfig.model_validate({"models": models}).is_disabled("selection")


def test_dummy_can_never_be_disabled() -> None:
    assert not PipelineConfig.model_validate({"models_disabled": {"dummy": True}}).is_disabled("dummy")


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"homepageRetrievalCascade": ["gru4rec"]}, "cannot do retrieval"),
        ({"cartScoringCascade": ["nope"]}, "unknown model"),
        ({"homepageScoringCascade": ["ease", "ease"]}, "twice"),
        ({"modelsDisabled": {"9": True}, "models": MODELS}, "index 9"),
        ({"modelsDisabled": {"nope": True}}, "unknown model"),
        ({"retrievalSize": 0}, "retrievalSize"),
        ({"easeConfig": {"l2Options": [-1]}}, "> 0"),
        ({"gru4recConfig": {"loss": "top1"}}, "loss"),
    ],
)
def test_invalid_configs_are_refused(body: dict, needle: str) -> None:
    with pytest.raises(ValidationError) as raised:
        PipelineConfig.model_validate(body)
    assert needle in str(raised.value)


def test_defaults_filled_and_category_retrieval_fixed() -> None:
    config = PipelineConfig()
    assert config.cascade(Page.HOMEPAGE, Phase.RETRIEVAL) == DEFAULT_CASCADES["homepage_retrieval_cascade"]
    assert config.cascade(Page.CATEGORY_LIST, Phase.RETRIEVAL) == []
    wire = config.to_wire()
    assert wire["categoryListRetrievalCascade"] is None
    assert wire["models_disabled"] == {}
    assert wire["gru4recConfig"]["numEpochsOptions"] == [10]


def test_dashboard_float_options_are_coerced_to_ints() -> None:
    config = PipelineConfig.model_validate({"gru4recConfig": {"numEpochsOptions": [3.0], "batchSizeOptions": [32.0]}})
    assert config.gru4rec_config.num_epochs_options == [3]
    assert config.gru4rec_config.batch_size_options == [32]


def test_every_info_entry_the_dashboard_reads_is_a_string() -> None:
    info = field_info()
    for key in (
        "retrievalSize",
        "orderingSize",
        "homepageRetrievalCascade",
        "categoryListRetrievalCascade",
        "cartScoringCascade",
    ):
        assert isinstance(info[key]["title"], str) and isinstance(info[key]["description"], str)
    for sub in ("l2Options", "reviewsMultiplier"):
        assert isinstance(info["easeConfig"][sub]["title"], str)
    for sub in ("numEpochsOptions", "batchSizeOptions", "embeddingSizeOptions", "hiddenSizeOptions",
                "learningRateOptions", "incrementalTrainings", "eventsMultiplier"):  # fmt: skip
        assert isinstance(info["gru4recConfig"][sub]["description"], str)
