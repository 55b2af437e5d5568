"""The runtime configuration (``PipelineConfig``): cascades, sizes and model hyper-parameters.

It is what the ecoseller dashboard edits and sends as ``_model_class: "Config"``; every saved version is validated
here (unknown model names, a model in a phase it cannot serve, bad sizes are refused) and the newest one is in
force. Keys are camelCase on the wire (``by_alias``) with snake_case accepted on input; ``models_disabled`` keeps
ecoseller's snake-case spelling on output.
"""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel as _pydantic_to_camel

from recommender_system.domain import Page, Phase
from recommender_system.prediction.models.registry import MODEL_NAMES, SPECS

CASCADE_FIELDS: dict[tuple[Page, Phase], str] = {
    (Page.HOMEPAGE, Phase.RETRIEVAL): "homepage_retrieval_cascade",
    (Page.HOMEPAGE, Phase.SCORING): "homepage_scoring_cascade",
    (Page.CATEGORY_LIST, Phase.SCORING): "category_list_scoring_cascade",
    (Page.PRODUCT_DETAIL, Phase.RETRIEVAL): "product_detail_retrieval_cascade",
    (Page.PRODUCT_DETAIL, Phase.SCORING): "product_detail_scoring_cascade",
    (Page.CART, Phase.RETRIEVAL): "cart_retrieval_cascade",
    (Page.CART, Phase.SCORING): "cart_scoring_cascade",
}

DEFAULT_CASCADES: dict[str, list[str]] = {
    "homepage_retrieval_cascade": ["ease", "als", "cooccurrence", "popularity", "selection"],
    "homepage_scoring_cascade": ["ease", "als", "gru4rec", "cooccurrence", "popularity", "selection"],
    "category_list_scoring_cascade": ["ease", "als", "gru4rec", "cooccurrence", "popularity", "selection"],
    "product_detail_retrieval_cascade": ["similarity", "cooccurrence", "popularity", "selection"],
    "product_detail_scoring_cascade": [
        "ease",
        "als",
        "gru4rec",
        "cooccurrence",
        "similarity",
        "popularity",
        "selection",
    ],
    "cart_retrieval_cascade": ["cooccurrence", "similarity", "popularity", "selection"],
    "cart_scoring_cascade": [
        "ease",
        "als",
        "gru4rec",
        "cooccurrence",
        "similarity",
        "popularity",
        "selection",
    ],
}


def to_camel(name: str) -> str:
    """snake_case -> camelCase, keeping ``gru4rec`` as ecoseller spells it (``gru4recConfig``)."""
    return _pydantic_to_camel(name).replace("gru4Rec", "gru4rec")


class _Wire(BaseModel):
    """camelCase on the wire, snake_case accepted, unknown keys ignored."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class EventWeights(_Wire):
    """How much each kind of shopper event counts in the interaction matrix of EASE, ALS and co-occurrence."""

    view: float = Field(1.0, ge=0, title="View weight", description="Weight of a product-detail view.")
    cart: float = Field(3.0, ge=0, title="Add-to-cart weight", description="Weight of an add-to-cart.")
    order: float = Field(5.0, ge=0, title="Order weight", description="Weight of an ordered variant.")
    review_per_star: float = Field(
        1.0, ge=0, title="Review weight per star", description="A review weighs its rating times this value."
    )


class EaseConfig(_Wire):
    l2_options: list[float] = Field(
        [10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0],
        min_length=1,
        title="L2 regularization options",
        description="Candidate values of lambda; the one with the best validation NDCG@20 is used.",
    )
    reviews_multiplier: float = Field(
        0.5,
        ge=0,
        title="Reviews multiplier",
        description="EASE is ready for training once there are more events than this times the number of variants.",
    )
    max_items: int = Field(
        20_000,
        ge=10,
        title="Item cap",
        description="Only the most frequent items enter the item-item matrix.",
    )

    @field_validator("l2_options")
    @classmethod
    def _positive(cls, values: list[float]) -> list[float]:
        if any(v <= 0 for v in values):
            raise ValueError("every L2 option must be > 0")
        return values


class Gru4recConfig(_Wire):
    num_epochs_options: list[int] = Field(
        [10], min_length=1, title="Number of epochs options", description=""
    )
    batch_size_options: list[int] = Field([80], min_length=1, title="Batch size options", description="")
    embedding_size_options: list[int] = Field(
        [0], min_length=1, title="Embedding size options", description="0 shares the output item embedding as input."
    )
    hidden_size_options: list[int] = Field(
        [224], min_length=1, title="Hidden layer size options", description=""
    )
    learning_rate_options: list[float] = Field(
        [0.05], min_length=1, title="Learning rate options", description=""
    )
    incremental_trainings: int = Field(10, ge=0, title="Number of incremental trainings", description="")
    events_multiplier: float = Field(
        10.0,
        ge=0,
        title="Events multiplier",
        description="GRU4Rec is ready for training once there are more views than this times the number of variants.",
    )
    loss: str = Field("bpr-max", title="Loss", description="cross-entropy or bpr-max")
    n_sample: int = Field(
        2048, ge=0, title="Negative samples", description="Shared popularity-sampled negatives."
    )
    sample_alpha: float = Field(0.4, ge=0, le=1, title="Sampling exponent", description="")

    @field_validator(
        "num_epochs_options",
        "batch_size_options",
        "embedding_size_options",
        "hidden_size_options",
        mode="before",
    )
    @classmethod
    def _ints(cls, values: Any) -> Any:
        # the dashboard parses its form fields with parseFloat
        if isinstance(values, list):
            return [int(v) if isinstance(v, float) and v.is_integer() else v for v in values]
        return values

    @field_validator("loss")
    @classmethod
    def _loss(cls, value: str) -> str:
        if value not in ("cross-entropy", "bpr-max"):
            raise ValueError("loss must be 'cross-entropy' or 'bpr-max'")
        return value


class AlsConfig(_Wire):
    factors: int = Field(64, ge=1, le=1024, title="Factors", description="")
    regularization: float = Field(32.0, ge=0, title="Regularization", description="")
    alpha: float = Field(5.0, ge=0, title="Confidence scale", description="")
    iterations: int = Field(15, ge=1, le=200, title="Iterations", description="")


class SimilarityConfig(_Wire):
    neighbours: int = Field(100, ge=1, le=2000, title="Neighbours kept per variant", description="")


class CooccurrenceConfig(_Wire):
    neighbours: int = Field(100, ge=1, le=2000, title="Neighbours kept per variant", description="")
    shrink: float = Field(20.0, ge=0, title="Shrink", description="")


class PopularityConfig(_Wire):
    half_life_days: float | None = Field(
        None,
        gt=0,
        title="Recency half-life (days)",
        description="Orders this old weigh half; empty for no decay.",
    )


class TrainingConfig(_Wire):
    refresh_hours: float = Field(
        24.0, gt=0, title="Refresh period (hours)", description="A model older than this is retrained."
    )
    changed_share: float = Field(
        0.2,
        gt=0,
        title="Changed share",
        description="Retrain when new events or catalogue changes exceed this share.",
    )


class PipelineConfig(_Wire):
    retrieval_size: int = Field(1000, ge=1, le=100_000, title="Retrieval size", description="")
    ordering_size: int = Field(50, ge=0, le=1000, title="Ordering size", description="")
    models_disabled: dict[str, bool] = Field(
        default_factory=dict,
        alias="models_disabled",
        validation_alias=AliasChoices("models_disabled", "modelsDisabled"),
    )
    homepage_retrieval_cascade: list[str] | None = None
    homepage_scoring_cascade: list[str] | None = None
    category_list_retrieval_cascade: None = None
    category_list_scoring_cascade: list[str] | None = None
    product_detail_retrieval_cascade: list[str] | None = None
    product_detail_scoring_cascade: list[str] | None = None
    cart_retrieval_cascade: list[str] | None = None
    cart_scoring_cascade: list[str] | None = None
    event_weights: EventWeights = Field(default_factory=EventWeights)
    ease_config: EaseConfig = Field(default_factory=EaseConfig)
    gru4rec_config: Gru4recConfig = Field(default_factory=Gru4recConfig)
    als_config: AlsConfig = Field(default_factory=AlsConfig)
    similarity_config: SimilarityConfig = Field(default_factory=SimilarityConfig)
    cooccurrence_config: CooccurrenceConfig = Field(default_factory=CooccurrenceConfig)
    popularity_config: PopularityConfig = Field(default_factory=PopularityConfig)
    training_config: TrainingConfig = Field(default_factory=TrainingConfig)
    deleted: bool = False

    @model_validator(mode="before")
    @classmethod
    def _resolve_disabled(cls, data: Any) -> Any:
        """Accept ``modelsDisabled`` keyed by name or by index into ``models`` (the dashboard's body)."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        data.pop("categoryListRetrievalCascade", None)
        data.pop("category_list_retrieval_cascade", None)
        # The dashboard sends its page state: the loaded ``models_disabled`` next to the edited ``modelsDisabled``.
        # The edited switches win; a body with only one of them uses that one.
        raw = data.get("modelsDisabled", data.get("models_disabled"))
        models = data.get("models")
        listed: list[str] = []
        if isinstance(models, list):
            listed = [m.get("name") if isinstance(m, dict) else m for m in models]
        if isinstance(raw, dict):
            resolved: dict[str, Any] = {}
            for key, value in raw.items():
                name = key
                if isinstance(key, str) and key.isdigit() and key not in SPECS:
                    index = int(key)
                    order = listed or list(MODEL_NAMES)
                    if index >= len(order):
                        raise ValueError(f"modelsDisabled: index {index} is not in models")
                    name = order[index]
                resolved[str(name)] = value
            data["models_disabled"] = resolved
            data.pop("modelsDisabled", None)
        elif raw is None and listed and isinstance(models, list):
            # derive the disabled set from models[i].disabled when no explicit map is sent
            derived = {
                m["name"]: bool(m.get("disabled")) for m in models if isinstance(m, dict) and "name" in m
            }
            if any(derived.values()):
                data["models_disabled"] = derived
        return data

    @field_validator("models_disabled")
    @classmethod
    def _known_disabled(cls, value: dict[str, bool]) -> dict[str, bool]:
        unknown = sorted(set(value) - set(SPECS))
        if unknown:
            raise ValueError(f"unknown model name(s) {unknown}; known: {list(MODEL_NAMES)}")
        return value

    @model_validator(mode="after")
    def _check_cascades(self) -> PipelineConfig:
        for (page, phase), field_name in CASCADE_FIELDS.items():
            cascade = getattr(self, field_name)
            if cascade is None:
                continue
            seen: set[str] = set()
            for name in cascade:
                spec = SPECS.get(name)
                if spec is None:
                    raise ValueError(
                        f"{to_camel(field_name)}: unknown model {name!r}; known: {list(MODEL_NAMES)}"
                    )
                if not spec.can(phase, page):
                    raise ValueError(
                        f"{to_camel(field_name)}: model {name!r} cannot do {phase.value} for {page.value}"
                    )
                if name in seen:
                    raise ValueError(f"{to_camel(field_name)}: model {name!r} is listed twice")
                seen.add(name)
        return self

    def cascade(self, page: Page, phase: Phase) -> list[str]:
        """The cascade in force for a page and phase, defaults filled in. Category lists have no retrieval model."""
        field_name = CASCADE_FIELDS.get((page, phase))
        if field_name is None:
            return []
        configured = getattr(self, field_name)
        return list(DEFAULT_CASCADES[field_name] if configured is None else configured)

    def is_disabled(self, name: str) -> bool:
        return bool(self.models_disabled.get(name, False)) and name != "dummy"

    def to_wire(self) -> dict[str, Any]:
        """The ``config`` object of ``GET /dashboard/configuration``: every cascade filled in, camelCase keys."""
        body = self.model_dump(by_alias=True)
        for field_name in DEFAULT_CASCADES:
            body[to_camel(field_name)] = self.cascade(*_page_phase(field_name))
        body["categoryListRetrievalCascade"] = None
        return body

    def to_storage(self) -> dict[str, Any]:
        """What a config version row stores: exactly what was configured (defaults stay implicit)."""
        return self.model_dump(by_alias=True, exclude_none=False)


def _page_phase(field_name: str) -> tuple[Page, Phase]:
    for key, name in CASCADE_FIELDS.items():
        if name == field_name:
            return key
    raise KeyError(field_name)


def field_info() -> dict[str, Any]:
    """``info`` of ``GET /dashboard/configuration``: a title and description (strings) for every config key."""
    titles = {
        "retrieval_size": ("Retrieval size", "Number of candidate variants the retrieval step returns."),
        "ordering_size": ("Ordering size", "Number of top-scored variants re-ordered for diversity."),
        "homepage_retrieval_cascade": (
            "Homepage retrieval",
            "Models that retrieve candidates for the homepage.",
        ),
        "homepage_scoring_cascade": ("Homepage scoring", "Models that score candidates for the homepage."),
        "category_list_retrieval_cascade": (
            "Category list retrieval",
            "No model is used: the candidates are the variants of the category and its subcategories.",
        ),
        "category_list_scoring_cascade": (
            "Category list scoring",
            "Models that order a category's variants.",
        ),
        "product_detail_retrieval_cascade": (
            "Product detail retrieval",
            "Models that retrieve candidates for a product page.",
        ),
        "product_detail_scoring_cascade": (
            "Product detail scoring",
            "Models that score candidates on a product page.",
        ),
        "cart_retrieval_cascade": ("Cart retrieval", "Models that retrieve candidates for the cart page."),
        "cart_scoring_cascade": ("Cart scoring", "Models that score candidates for the cart page."),
    }
    info: dict[str, Any] = {to_camel(k): {"title": t, "description": d} for k, (t, d) in titles.items()}
    for key in ("deleted", "id", "create_at", "models_disabled"):
        info[key] = {"title": None, "description": None}
    nested = {
        "easeConfig": EaseConfig,
        "gru4recConfig": Gru4recConfig,
        "alsConfig": AlsConfig,
        "similarityConfig": SimilarityConfig,
        "cooccurrenceConfig": CooccurrenceConfig,
        "popularityConfig": PopularityConfig,
        "eventWeights": EventWeights,
        "trainingConfig": TrainingConfig,
    }
    for key, cls in nested.items():
        info[key] = {
            to_camel(name): {
                "title": f.title or name,
                "description": f.description or (f.title or name) + ".",
            }
            for name, f in cls.model_fields.items()
        }
    return info
