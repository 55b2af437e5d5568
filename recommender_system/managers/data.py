"""Ingestion: validate the objects of ``/store_object(s)`` (and of the demo loader), then store them in one unit
of work.

A batch is validated whole before anything is written; the first invalid item is answered with a 400 naming its
index and field, and nothing is stored. A valid batch is written class by class (in ``APPLY_ORDER``; within a
class, the last object with a given key wins) in one transaction, with the data revisions bumped once; any
database error rolls the whole batch back. Ingestion never trains: a ``TrainerQueueItem`` only queues a job.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from recommender_system import metrics
from recommender_system.api.schemas.ingest import MODEL_CLASSES, SCHEMAS
from recommender_system.prediction.config import PipelineConfig
from recommender_system.storage import bulk, revisions
from recommender_system.storage.catalog import CatalogStore
from recommender_system.storage.config_store import ConfigStore
from recommender_system.storage.database import Database
from recommender_system.storage.events import EVENT_TABLES, EventStore
from recommender_system.storage.tables import utcnow
from recommender_system.storage.training import TrainingStore

logger = logging.getLogger(__name__)

CONFIG_CLASS = "Config"

APPLY_ORDER: tuple[str, ...] = (
    "AttributeType",
    "Attribute",
    "ProductType",
    "Category",
    "ProductVariant",
    "Product",
    "ProductTranslation",
    "ProductPrice",
    "Order",
    "ProductDetailEnter",
    "ProductDetailLeave",
    "ProductAddToCart",
    "RecommendationView",
    "Review",
    "Config",
    "TrainerQueueItem",
)
"""The order in which the classes of one batch are written."""

_FIELD_IN_MESSAGE = re.compile(r"^([A-Za-z_0-9]+): ")


class InvalidObject(ValueError):
    """An ingested object that does not validate: ``message`` names the batch index and the field; ``details``
    lists every problem of that object (``index``, ``field``, ``loc``, ``message``)."""

    def __init__(self, message: str, details: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class DataManager:
    """Validates and stores ingested objects."""

    def __init__(
        self,
        database: Database,
        catalog_store: CatalogStore,
        event_store: EventStore,
        config_store: ConfigStore,
        training_store: TrainingStore,
    ) -> None:
        self.database = database
        self.catalog_store = catalog_store
        self.event_store = event_store
        self.config_store = config_store
        self.training_store = training_store
        self._schemas = SCHEMAS
        self._adapters: dict[type[BaseModel], TypeAdapter[list[Any]]] = {}
        self._model_classes = MODEL_CLASSES

    # ------------------------------------------------------------------------------------------ validation
    def validate(self, item: Any, index: int | None = None) -> BaseModel:
        """One object as its schema, or ``InvalidObject`` naming the field (and the batch index)."""
        prefix = "" if index is None else f"item {index}: "
        if not isinstance(item, dict):
            raise _invalid(prefix, index, "", f"expected a JSON object, got {_json_type(item)}")
        model_class = item.get("_model_class")
        if model_class is None:
            raise _invalid(prefix, index, "_model_class", "missing field '_model_class'")
        schema = self._schemas.get(model_class) if isinstance(model_class, str) else None
        if schema is None and model_class != CONFIG_CLASS:
            raise _invalid(
                prefix,
                index,
                "_model_class",
                f"invalid field '_model_class': unknown class {model_class!r}; expected one of "
                f"{list(self._model_classes)}",
            )
        try:
            if schema is None:
                return PipelineConfig.model_validate(item)
            return schema.model_validate(item)
        except ValidationError as error:
            raise _from_validation_error(prefix, index, error) from None

    def validate_batch(self, items: Sequence[Any], first_index: int = 0) -> list[BaseModel]:
        """Every item of a batch, or ``InvalidObject`` for the first invalid one (indices count from
        ``first_index``, for a batch that is part of a longer sequence)."""
        fast = self._same_class_schema(items)
        if fast is not None:
            try:  # one call for the whole list (the usual event batch); errors are located item by item below
                return self._list_adapter(fast).validate_python(items)
            except ValidationError:
                pass
        validate = self.validate
        return [validate(item, index) for index, item in enumerate(items, start=first_index)]

    def _same_class_schema(self, items: Sequence[Any]) -> type[BaseModel] | None:
        """The schema shared by every item when all are objects of one (non-Config) class, else None."""
        if not items or type(items[0]) is not dict:
            return None
        name = items[0].get("_model_class")
        schema = self._schemas.get(name) if isinstance(name, str) else None
        if schema is None:
            return None
        for item in items:
            if type(item) is not dict or item.get("_model_class") != name:
                return None
        return schema

    def _list_adapter(self, schema: type[BaseModel]) -> TypeAdapter[list[Any]]:
        adapter = self._adapters.get(schema)
        if adapter is None:
            adapter = self._adapters[schema] = TypeAdapter(list[schema])  # type: ignore[valid-type]
        return adapter

    # ----------------------------------------------------------------------------------------------- writes
    def store_object(self, item: Any) -> dict[str, int]:
        return self.store([self.validate(item)])

    def store_objects(self, items: Sequence[Any]) -> dict[str, int]:
        return self.store(self.validate_batch(items))

    def store(self, objects: Sequence[BaseModel]) -> dict[str, int]:
        """Write validated objects in one unit of work; all or nothing. Returns ``{"stored": n}``."""
        return self.store_batches([objects])

    def store_batches(
        self, batches: Sequence[Sequence[BaseModel]], on_batch: Callable[[int], None] | None = None
    ) -> dict[str, int]:
        """Write several validated batches in ONE unit of work (all or nothing), calling ``on_batch(len(batch))``
        after each (a progress bar); the revisions are bumped once, at the end."""
        grouped = [self._groups(objects) for objects in batches]
        classes = {name for groups in grouped for name in groups}
        now = utcnow()
        touched: set[str] = set()
        counts: dict[str, int] = {}
        with self.database.write_session() as session:
            if classes and classes <= EVENT_TABLES.keys():
                bulk.asynchronous_commit(session)  # clickstream only: no wait for the WAL flush
            for objects, groups in zip(batches, grouped, strict=True):
                for name in APPLY_ORDER:
                    group = groups.get(name)
                    if group:
                        touched.update(self._apply(session, name, group, now))
                        counts[name] = counts.get(name, 0) + len(group)
                if on_batch is not None:
                    on_batch(len(objects))
            if touched:
                revisions.bump(session, *sorted(touched))
        metrics.observe_ingest(counts)
        return {"stored": sum(counts.values())}

    @staticmethod
    def _groups(objects: Sequence[BaseModel]) -> dict[str, list[Any]]:
        groups: dict[str, list[Any]] = {}
        for obj in objects:
            name = CONFIG_CLASS if isinstance(obj, PipelineConfig) else obj.model_class  # type: ignore[attr-defined]
            groups.setdefault(name, []).append(obj)
        return groups

    def _apply(self, session: Any, name: str, group: list[Any], now: Any) -> tuple[str, ...]:
        """Write one class's objects; returns the revisions that changed."""
        catalog, events = self.catalog_store, self.event_store
        if name in EVENT_TABLES:
            events.append_events(session, name, group, now)
            return (revisions.EVENTS,)
        if name == "Review":
            events.upsert_reviews(session, group, now)
            return (revisions.EVENTS,)
        if name == "Order":
            events.upsert_orders(session, group, now)
            return (revisions.ORDERS, revisions.EVENTS)
        if name == CONFIG_CLASS:
            for config in group:
                self.config_store.save(session, config)
            return ()
        if name == "TrainerQueueItem":
            for item in group:
                self.training_store.request_job(session, item.model_name, reason="requested")
            return ()
        writers = {
            "AttributeType": catalog.upsert_attribute_types,
            "Attribute": catalog.upsert_attributes,
            "ProductType": catalog.upsert_product_types,
            "Category": catalog.upsert_categories,
            "ProductVariant": catalog.upsert_variants,
            "Product": catalog.upsert_products,
            "ProductPrice": catalog.upsert_prices,
        }
        if name == "ProductTranslation":
            catalog.upsert_translations(session, group)
        else:
            writers[name](session, group, now)
        return (revisions.CATALOG,)


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return type(value).__name__


def _invalid(prefix: str, index: int | None, field: str, message: str) -> InvalidObject:
    detail: dict[str, Any] = {"field": field, "loc": [field] if field else [], "message": message}
    if index is not None:
        detail = {"index": index, **detail}
        detail["loc"] = [index, *detail["loc"]]
    return InvalidObject(f"{prefix}{message}", [detail])


def _from_validation_error(prefix: str, index: int | None, error: ValidationError) -> InvalidObject:
    details = []
    for item in error.errors(include_url=False, include_input=False, include_context=False):
        loc = list(item.get("loc", ()))
        message = item.get("msg", "invalid").removeprefix("Value error, ")
        field = ".".join(str(part) for part in loc)
        if not field:  # a whole-object check (a config cascade): the message starts with the field's name
            match = _FIELD_IN_MESSAGE.match(message)
            field = match.group(1) if match else ""
        detail: dict[str, Any] = {"field": field, "loc": loc, "message": message}
        if index is not None:
            detail = {"index": index, **detail, "loc": [index, *loc]}
        details.append(detail)
    first = details[0]
    if first["field"]:
        text = f"{prefix}invalid field '{first['field']}': {first['message']}"
    else:
        text = f"{prefix}{first['message']}"
    return InvalidObject(text, details)
