"""The write side of the catalogue: attribute types, attributes, product types, categories (with their ancestry
closure), products (with variants and translations), variants (with attributes) and prices.

Every method takes the caller's unit-of-work ``Session`` and a batch of validated ingest objects (the ``*In``
schemas of ``api/schemas/ingest.py``, read by attribute: storage does not import the HTTP layer), and writes the
whole batch with one multi-row statement per table: upsert by primary key, relation lists replaced.
``created_at`` is the client's creation time when sent (kept on a later send without one), else the arrival time
``now``; ``updated_at`` is always ``now``: it says when our copy last changed (the trainer compares it with its
watermarks, and the ecoseller backend sends ``update_at`` equal to ``create_at`` anyway). Revisions are bumped by
the caller (``DataManager``), once per batch.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from recommender_system.storage import bulk
from recommender_system.storage.tables import (
    Attribute,
    AttributeType,
    Category,
    CategoryAncestor,
    Product,
    ProductPrice,
    ProductProductVariant,
    ProductTranslation,
    ProductType,
    ProductTypeAttributeType,
    ProductVariant,
    VariantAttribute,
)

logger = logging.getLogger(__name__)


class CatalogStore:
    """Stateless; one method per catalogue class."""

    def upsert_attribute_types(self, session: Session, items: Sequence[Any], now: datetime) -> None:
        rows = [
            {
                "id": item.id,
                "type": item.type,
                "type_name": item.type_name,
                "unit": item.unit,
                "deleted": item.deleted,
                "updated_at": now,
            }
            for item in items
        ]
        bulk.upsert(session, AttributeType.__table__, rows, ["id"])

    def upsert_attributes(self, session: Session, items: Sequence[Any], now: datetime) -> None:
        rows = [
            {
                "id": item.id,
                "attribute_type_id": item.attribute_type_id,
                "raw_value": item.raw_value,
                "numeric_value": item.numeric_value,
                "order": item.order,
                "deleted": item.deleted,
                "updated_at": now,
            }
            for item in items
        ]
        bulk.upsert(session, Attribute.__table__, rows, ["id"])

    def upsert_product_types(self, session: Session, items: Sequence[Any], now: datetime) -> None:
        items = _last_per(items, "id")
        rows = [
            {
                "id": item.id,
                "name": item.name,
                "deleted": item.deleted,
                "created_at": item.create_at,
                "updated_at": now,
            }
            for item in items
        ]
        bulk.upsert(session, ProductType.__table__, rows, ["id"], keep_when_missing={"created_at": now})
        links = [
            {"product_type_id": item.id, "attribute_type_id": attribute_type_id}
            for item in items
            for attribute_type_id in dict.fromkeys(item.attribute_types)
        ]
        table = ProductTypeAttributeType.__table__
        bulk.delete_where_in(session, table, "product_type_id", (item.id for item in items))
        bulk.insert(session, table, links)

    def upsert_categories(self, session: Session, items: Sequence[Any], now: datetime) -> None:
        """Upsert ``id -> parent_id`` and recompute the ancestry of every category of the batch and of all their
        descendants (a moved category takes its subtree with it; a child stored before its parent is fixed up when
        the parent arrives)."""
        rows = [
            {"id": item.id, "parent_id": item.parent_id, "deleted": item.deleted, "updated_at": now} for item in items
        ]
        bulk.upsert(session, Category.__table__, rows, ["id"])
        self.rebuild_ancestry(session, {item.id for item in items})

    def rebuild_ancestry(self, session: Session, category_ids: Iterable[int]) -> None:
        """Recompute the closure rows of ``category_ids`` and their descendants from the stored parent pointers.

        The closure describes the live tree: a category has a self row (depth 0) and one row per ancestor, walking
        parent pointers up to the root (a parent not stored yet is still an ancestor; the walk stops there). A
        deleted category has no rows, and the ancestry of its descendants stops below it, so a deleted category
        hides its subtree from its ancestors' listings.
        """
        tree = {cid: (parent, deleted) for cid, parent, deleted in session.execute(_CATEGORY_TREE)}
        children: dict[int, list[int]] = {}
        for cid, (parent, _deleted) in tree.items():
            if parent is not None and parent != cid:
                children.setdefault(parent, []).append(cid)
        affected: set[int] = set()
        stack = list(category_ids)
        while stack:
            cid = stack.pop()
            if cid in affected:
                continue
            affected.add(cid)
            stack.extend(children.get(cid, ()))
        rows = []
        for cid in sorted(affected):
            parent, deleted = tree.get(cid, (None, True))
            if deleted:
                continue
            rows.append({"category_id": cid, "ancestor_id": cid, "depth": 0})
            seen = {cid}
            depth = 0
            while parent is not None and parent not in seen:
                above, parent_deleted = tree.get(parent, (None, False))
                if parent_deleted:
                    break
                depth += 1
                rows.append({"category_id": cid, "ancestor_id": parent, "depth": depth})
                seen.add(parent)
                parent = above
            if parent is not None and parent in seen and parent != cid:
                logger.warning("category %s: its parent pointers form a cycle; ancestry stops there", cid)
        table = CategoryAncestor.__table__
        bulk.delete_where_in(session, table, "category_id", affected)
        bulk.insert(session, table, rows)

    def upsert_products(self, session: Session, items: Sequence[Any], now: datetime) -> None:
        items = _last_per(items, "id")
        rows = [
            {
                "id": item.id,
                "published": item.published,
                "category_id": item.category_id,
                "product_type_id": item.type_id,
                "deleted": item.deleted,
                "created_at": item.create_at,
                "updated_at": now,
            }
            for item in items
        ]
        bulk.upsert(session, Product.__table__, rows, ["id"], keep_when_missing={"created_at": now})
        links = [
            {"product_id": item.id, "product_variant_sku": sku}
            for item in items
            for sku in dict.fromkeys(item.product_variants)
        ]
        table = ProductProductVariant.__table__
        bulk.delete_where_in(session, table, "product_id", (item.id for item in items))
        bulk.insert(session, table, links)
        with_translations = [item for item in items if item.product_translations is not None]
        if with_translations:
            bulk.delete_where_in(
                session, ProductTranslation.__table__, "product_id", (item.id for item in with_translations)
            )
            translations = [
                _translation_row(translation, item.id)
                for item in with_translations
                for translation in item.product_translations or ()
            ]
            bulk.upsert(session, ProductTranslation.__table__, translations, ["id"])

    def upsert_translations(self, session: Session, items: Sequence[Any]) -> None:
        rows = [_translation_row(item, item.product_id) for item in items]
        bulk.upsert(session, ProductTranslation.__table__, rows, ["id"])

    def upsert_variants(self, session: Session, items: Sequence[Any], now: datetime) -> None:
        items = _last_per(items, "sku")
        rows = [
            {
                "sku": item.sku,
                "ean": item.ean,
                "weight": item.weight,
                "stock_quantity": item.stock_quantity,
                "recommendation_weight": item.recommendation_weight,
                "deleted": item.deleted,
                "created_at": item.create_at,
                "updated_at": now,
            }
            for item in items
        ]
        bulk.upsert(session, ProductVariant.__table__, rows, ["sku"], keep_when_missing={"created_at": now})
        links = [
            {"product_variant_sku": item.sku, "attribute_id": attribute_id}
            for item in items
            for attribute_id in dict.fromkeys(item.attributes)
        ]
        table = VariantAttribute.__table__
        bulk.delete_where_in(session, table, "product_variant_sku", (item.sku for item in items))
        bulk.insert(session, table, links)

    def upsert_prices(self, session: Session, items: Sequence[Any], now: datetime) -> None:
        rows = [
            {
                "id": item.id,
                "price_list_code": item.price_list_code,
                "product_variant_sku": item.product_variant_sku,
                "price": item.price,
                "deleted": item.deleted,
                "created_at": item.create_at,
                "updated_at": now,
            }
            for item in items
        ]
        bulk.upsert(session, ProductPrice.__table__, rows, ["id"], keep_when_missing={"created_at": now})


_CATEGORY_TREE = select(Category.id, Category.parent_id, Category.deleted)


def _last_per(items: Sequence, attribute: str) -> list:  # type: ignore[type-arg]
    """The last item of each key, in first-seen order (a later send of the same object in a batch wins)."""
    return list({getattr(item, attribute): item for item in items}.values())


def _translation_row(item: Any, product_id: int) -> dict[str, object]:
    return {
        "id": item.id,
        "product_id": product_id,
        "language_code": item.language_code,
        "title": item.title,
        "meta_title": item.meta_title,
        "meta_description": item.meta_description,
        "short_description": item.short_description,
        "description": item.description,
        "slug": item.slug,
        "deleted": item.deleted,
    }
