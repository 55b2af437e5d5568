"""HTTP shapes of ``POST /predict`` and ``POST /predict/product_positions``.

Requests are tolerant of everything the live ecoseller backend sends (notes 1.5): ``variants`` and
``variants_in_cart`` as a list, a comma-joined string, a single (numeric) scalar or ``""``; ``session_id`` as
``"undefined"``, ``""``, null or missing (all anonymous); ``user_id`` as null, an int or a string; ``limit``
missing, null, an int or a numeric string; and extra keys. What cannot be used is a 400 naming the field: an unknown
``recommendation_type``, a negative ``limit``, a category list without ``category_id``, a body that is not an object.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, RootModel, ValidationInfo, field_validator

from recommender_system.api.errors import ApiError
from recommender_system.domain import Page, Recommendation, RecommendationContext

ANONYMOUS = frozenset({"", "undefined", "null", "none"})
MAX_KEY_LENGTH = {"session_id": 100, "user_id": 255}
"""The widths of the stored columns (``shop_session.id``, ``*.user_id``)."""


def _optional_key(value: Any, info: ValidationInfo) -> str | None:
    """A session or user key: null, "", "undefined" -> None; ints -> their decimal string."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"{info.field_name} must be a string or an integer, not a boolean")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str):
        value = value.strip()
        if value.lower() in ANONYMOUS:
            return None
        limit = MAX_KEY_LENGTH.get(info.field_name or "", 255)
        if len(value) > limit:
            raise ValueError(f"{info.field_name} is longer than {limit} characters")
        return value
    raise ValueError(f"{info.field_name} must be a string, an integer or null")


def _optional_int(value: Any, info: ValidationInfo) -> Any:
    """null, "" -> None; "12" -> 12; booleans refused (pydantic would read them as 0/1)."""
    if isinstance(value, bool):
        raise ValueError(f"{info.field_name} must be an integer, not a boolean")
    if isinstance(value, str):
        value = value.strip()
        if value.lower() in ANONYMOUS:
            return None
    return value


def _sku_list(value: Any, info: ValidationInfo) -> tuple[str, ...]:
    """A list, a comma-joined string, a single scalar or nothing -> a tuple of non-empty SKU strings."""
    if value is None:
        return ()
    if isinstance(value, bool):
        raise ValueError(f"{info.field_name} must be a list of SKUs or a comma-separated string")
    if isinstance(value, str):
        parts: list[Any] = value.split(",")
    elif isinstance(value, int | float):
        parts = [value]
    elif isinstance(value, list | tuple):
        parts = list(value)
    else:
        raise ValueError(f"{info.field_name} must be a list of SKUs or a comma-separated string")
    skus: list[str] = []
    for part in parts:
        if isinstance(part, bool) or not isinstance(part, str | int | float):
            raise ValueError(f"{info.field_name} must hold SKU strings")
        text = str(int(part)) if isinstance(part, float) and part.is_integer() else str(part)
        text = text.strip()
        if text:
            skus.append(text)
    return tuple(dict.fromkeys(skus))


class PredictRequest(BaseModel):
    """The body of ``POST /predict``."""

    model_config = ConfigDict(extra="ignore")

    recommendation_type: Page
    session_id: str | None = None
    user_id: str | None = None
    limit: int | None = Field(None, ge=0)
    category_id: int | None = None
    variants: tuple[str, ...] = ()
    variants_in_cart: tuple[str, ...] = ()

    @classmethod
    def from_body(cls, body: Any) -> PredictRequest:
        """Validate a parsed JSON body (a non-object is a 400; field errors are 400s naming the field)."""
        if not isinstance(body, dict):
            raise ApiError(
                "the request body must be a JSON object",
                details=[{"loc": [], "field": "", "message": f"expected an object, got {type(body).__name__}"}],
            )
        request = cls.model_validate(body)
        if request.recommendation_type is Page.CATEGORY_LIST and request.category_id is None:
            message = "category_id is required for CATEGORY_LIST"
            raise ApiError(
                f"invalid field 'category_id': {message}",
                details=[{"loc": ["category_id"], "field": "category_id", "message": message}],
            )
        return request

    @field_validator("recommendation_type", mode="before")
    @classmethod
    def _page(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    _keys = field_validator("session_id", "user_id", mode="before")(_optional_key)
    _ints = field_validator("limit", "category_id", mode="before")(_optional_int)
    _skus = field_validator("variants", "variants_in_cart", mode="before")(_sku_list)

    def to_context(self) -> RecommendationContext:
        return RecommendationContext(
            page=self.recommendation_type,
            session_id=self.session_id,
            user_id=self.user_id,
            limit=self.limit,
            category_id=self.category_id,
            variants=self.variants,
            cart=self.variants_in_cart,
        )


class ProductPositionsRequest(PredictRequest):
    """The body of ``POST /predict/product_positions``: a category list request (the type may be omitted)."""

    recommendation_type: Page = Page.CATEGORY_LIST

    @field_validator("recommendation_type")
    @classmethod
    def _only_categories(cls, value: Page) -> Page:
        if value is not Page.CATEGORY_LIST:
            raise ValueError("product positions are computed for CATEGORY_LIST only")
        return value


class RsInfo(BaseModel):
    recommendation_type: str
    model_name: str
    model_identifier: str
    position: int = Field(ge=0, description="0-based position in the returned list")


class PredictedItem(BaseModel):
    product_variant_sku: str
    rs_info: RsInfo


class PredictResponse(RootModel[list[PredictedItem]]):
    """The answer of ``POST /predict``: best first."""

    @staticmethod
    def body(recommendation: Recommendation) -> list[dict[str, Any]]:
        """The response as plain JSON-ready data, built without per-item model objects (the hot path)."""
        page = recommendation.page.value
        name = recommendation.model_name
        identifier = recommendation.model_identifier
        return [
            {
                "product_variant_sku": sku,
                "rs_info": {
                    "recommendation_type": page,
                    "model_name": name,
                    "model_identifier": identifier,
                    "position": position,
                },
            }
            for position, sku in enumerate(recommendation.skus)
        ]


class ProductPositionsResponse(RootModel[dict[str, int]]):
    """The answer of ``POST /predict/product_positions``: product id (as a string) -> position."""
