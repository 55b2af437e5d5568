"""Request schemas of ``POST /store_object(s)``: one pydantic model per ecoseller ``_model_class``.

They accept what the ecoseller backend really sends (notes 1.3 and 1.4): unknown keys are ignored, snake_case names
and their camelCase aliases are both accepted, ``user_id`` may be an int, a string or null (it is kept as a
string), Product's ``type`` is read as ``type_id``, timestamps may be ISO-8601 or epoch, naive (taken as UTC) or
with an offset (converted to naive UTC). A timestamp that is missing stays ``None`` here and is stamped at arrival
by the stores. Lengths and integer ranges mirror the columns, so valid input never fails in the database.

``Config`` is validated by ``PipelineConfig`` (prediction/config.py) and is not defined here.
"""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    AliasChoices,
    AliasGenerator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
)
from pydantic.alias_generators import to_camel

from recommender_system.prediction.models.registry import TRAINABLE_MODEL_NAMES

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def _no_nul(value: str | None) -> str | None:
    # PostgreSQL text cannot hold NUL characters; refuse them here rather than fail in the database
    if value is not None and "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def _to_naive_utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is None:
        return value
    try:
        return value.astimezone(UTC).replace(tzinfo=None)
    except OverflowError:
        raise ValueError("is out of range once converted to UTC") from None


def _user_id(value: Any) -> Any:
    """Int, numeric string, any string or null; kept as a string."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        raise ValueError("must be an integer, a string or null")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    raise ValueError("must be an integer, a string or null")


def _id_of(value: Any) -> Any:
    """A foreign key sent as a nested object (``{"id": 3, ...}``) is read as its id."""
    if isinstance(value, dict) and "id" in value:
        return value["id"]
    return value


def _string(max_length: int) -> Any:
    return Annotated[str, Field(max_length=max_length), AfterValidator(_no_nul)]


def _optional_string(max_length: int | None = None) -> Any:
    return Annotated[str, Field(max_length=max_length), AfterValidator(_no_nul)] | None


Int32 = Annotated[int, Field(ge=INT32_MIN, le=INT32_MAX)]
Int64 = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)]
Sku = _string(255)
SessionId = Annotated[str, Field(min_length=1, max_length=100), AfterValidator(_no_nul)]
UserId = Annotated[_optional_string(255), BeforeValidator(_user_id)]
Timestamp = Annotated[datetime | None, AfterValidator(_to_naive_utc)]
Quantity = Annotated[int, Field(ge=0, le=INT32_MAX)]


def _created(**kwargs: Any) -> Any:
    return Field(None, validation_alias=AliasChoices("create_at", "createAt", "created_at", "createdAt"), **kwargs)


def _updated(**kwargs: Any) -> Any:
    return Field(None, validation_alias=AliasChoices("update_at", "updateAt", "updated_at", "updatedAt"), **kwargs)


class IngestSchema(BaseModel):
    """Common rules: unknown keys ignored, snake_case or camelCase, numbers accepted for strings, finite floats."""

    model_config = ConfigDict(
        extra="ignore",
        alias_generator=AliasGenerator(validation_alias=to_camel),
        validate_by_name=True,
        validate_by_alias=True,
        loc_by_alias=False,
        coerce_numbers_to_str=True,
        allow_inf_nan=False,
        protected_namespaces=(),
    )

    model_class: ClassVar[str]
    deleted: bool = False


# ----------------------------------------------------------------------------------------------- catalogue
class AttributeTypeIn(IngestSchema):
    model_class = "AttributeType"
    id: Int32
    type: _string(100)
    type_name: _optional_string(200) = None
    unit: _optional_string(200) = None


class AttributeIn(IngestSchema):
    model_class = "Attribute"
    id: Int32
    attribute_type_id: Annotated[Int32, BeforeValidator(_id_of)] = Field(
        validation_alias=AliasChoices("type", "attribute_type_id", "attributeTypeId")
    )
    raw_value: _optional_string(200) = None
    order: Int32 | None = None
    ext_attributes: list[Int32] = Field(default_factory=list)
    """Validated and ignored (the backend's extension attributes live in a colliding id space)."""

    @property
    def numeric_value(self) -> float | None:
        """``raw_value`` as a number when it is one (``"1995"`` -> 1995.0), else None."""
        if self.raw_value is None or "_" in self.raw_value:
            return None
        try:
            value = float(self.raw_value)
        except ValueError:
            return None
        return value if math.isfinite(value) else None


class ProductTypeIn(IngestSchema):
    model_class = "ProductType"
    id: Int32
    name: _optional_string(200) = None
    attribute_types: list[Int32]
    """Replaces the product type's attribute types."""
    products: list[Int32] = Field(default_factory=list)
    """Validated and ignored (products name their type themselves)."""
    create_at: Timestamp = _created()
    update_at: Timestamp = _updated()


class CategoryIn(IngestSchema):
    model_class = "Category"
    id: Int32
    parent_id: Annotated[Int32 | None, BeforeValidator(_id_of)] = Field(
        None, validation_alias=AliasChoices("parent_id", "parentId", "parent")
    )


class ProductTranslationFields(IngestSchema):
    """A translation as nested in a Product (its product is the enclosing one)."""

    model_class = "ProductTranslation"
    id: Int32
    language_code: _string(10) = Field(validation_alias=AliasChoices("language_code", "languageCode", "language"))
    title: _optional_string() = None
    meta_title: _optional_string() = None
    meta_description: _optional_string() = None
    short_description: _optional_string() = None
    description: _optional_string() = None
    slug: _optional_string() = None


class ProductTranslationIn(ProductTranslationFields):
    """A translation sent on its own: it must name the product it belongs to."""

    product_id: Annotated[Int32, BeforeValidator(_id_of)] = Field(
        validation_alias=AliasChoices("product_id", "productId", "product"),
        description="the product this translation belongs to (required when sent on its own)",
    )


class ProductIn(IngestSchema):
    model_class = "Product"
    id: Int32
    published: bool
    category_id: Annotated[Int32 | None, BeforeValidator(_id_of)] = Field(
        None, validation_alias=AliasChoices("category_id", "categoryId", "category")
    )
    type_id: Annotated[Int32 | None, BeforeValidator(_id_of)] = Field(
        None, validation_alias=AliasChoices("type_id", "typeId", "type", "product_type_id", "productTypeId")
    )
    product_variants: list[Sku]
    """SKUs of the product's variants; they replace the stored ones."""
    product_translations: list[ProductTranslationFields] | None = None
    """When sent, they replace the product's stored translations."""
    create_at: Timestamp = _created()
    update_at: Timestamp = _updated()


class ProductVariantIn(IngestSchema):
    model_class = "ProductVariant"
    sku: Sku
    ean: _optional_string(64) = None
    weight: float | None = None
    stock_quantity: Int32
    recommendation_weight: float = Field(ge=0)
    attributes: list[Int32]
    """Attribute ids of the variant; they replace the stored ones."""
    create_at: Timestamp = _created()
    update_at: Timestamp = _updated()


class ProductPriceIn(IngestSchema):
    model_class = "ProductPrice"
    id: Int32
    price_list_code: _string(200) = Field(
        validation_alias=AliasChoices("price_list_code", "priceListCode", "price_list", "priceList")
    )
    product_variant_sku: _optional_string(255) = None
    price: float
    create_at: Timestamp = _created()
    update_at: Timestamp = _updated()


def _order_line(value: Any) -> Any:
    """``[sku, quantity]``; a ``{"sku"|"product_variant_sku": ..., "quantity": ...}`` object is accepted too."""
    if isinstance(value, dict):
        sku = value.get("product_variant_sku", value.get("productVariantSku", value.get("sku")))
        return (sku, value.get("quantity", 1))
    return value


OrderLine = Annotated[tuple[Sku, Quantity], BeforeValidator(_order_line)]


class OrderIn(IngestSchema):
    model_class = "Order"
    token: uuid.UUID
    session_id: SessionId
    user_id: UserId = None
    product_variants: list[OrderLine]
    """``[[sku, quantity], ...]``: they replace the order's stored lines."""
    create_at: Timestamp = _created()
    update_at: Timestamp = _updated()


# -------------------------------------------------------------------------------------------------- events
class EventIn(IngestSchema):
    """A storefront event of one session."""

    session_id: SessionId
    user_id: UserId = None
    product_id: Int32
    product_variant_sku: Sku
    create_at: Timestamp = _created()


class ProductDetailEnterIn(EventIn):
    model_class = "ProductDetailEnter"
    recommendation_type: _optional_string(100) = None
    model_identifier: _optional_string(255) = None
    model_name: _optional_string(100) = None
    position: Int32 | None = None


class ProductDetailLeaveIn(EventIn):
    model_class = "ProductDetailLeave"
    time_spent: float


class ProductAddToCartIn(EventIn):
    model_class = "ProductAddToCart"


class RecommendationViewIn(EventIn):
    model_class = "RecommendationView"
    recommendation_type: _string(100)
    model_identifier: _string(255)
    position: Int32 | None = None


class ReviewIn(EventIn):
    model_class = "Review"
    id: Int64
    rating: Annotated[int, Field(ge=0, le=100)]
    update_at: Timestamp = _updated()


# ------------------------------------------------------------------------------------------------ commands
class TrainerQueueItemIn(IngestSchema):
    model_class = "TrainerQueueItem"
    model_name: str
    id: Int64 | None = None
    processed: bool = False
    create_at: Timestamp = _created()

    @field_validator("model_name")
    @classmethod
    def _trainable(cls, value: str) -> str:
        if value not in TRAINABLE_MODEL_NAMES:
            raise ValueError(f"unknown or untrainable model {value!r}; trainable: {list(TRAINABLE_MODEL_NAMES)}")
        return value


CONFIG_CLASS = "Config"

SCHEMAS: dict[str, type[IngestSchema]] = {
    schema.model_class: schema
    for schema in (
        AttributeIn,
        AttributeTypeIn,
        CategoryIn,
        OrderIn,
        ProductIn,
        ProductAddToCartIn,
        ProductDetailEnterIn,
        ProductDetailLeaveIn,
        ProductPriceIn,
        ProductTranslationIn,
        ProductTypeIn,
        ProductVariantIn,
        RecommendationViewIn,
        ReviewIn,
        TrainerQueueItemIn,
    )
}
"""``_model_class`` -> schema, for every class but ``Config`` (validated by ``PipelineConfig``)."""

MODEL_CLASSES: tuple[str, ...] = tuple(sorted([*SCHEMAS, CONFIG_CLASS]))
"""The 16 class names ``/store_object(s)`` accepts."""
