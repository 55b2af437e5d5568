"""Load the ecoseller demo data (a MovieLens-based movie store) through the ingest path.

The two bundled dumps (``mock_data_rs_products.sql.gz``, ``mock_data_rs_feedback.sql.gz``, MIT, from
ecoseller/demo-data) are parsed (``demo/sql.py``), turned into the same ``_model_class`` objects the HTTP API takes
and stored by ``DataManager``, so the same validation applies. The dumps' quirks are resolved as the shop meant
them; ``demo/README.md`` lists every decision.
"""

from __future__ import annotations

import gzip
import logging
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from tqdm import tqdm

from recommender_system.demo.sql import InsertStatement, parse_inserts
from recommender_system.storage.tables import ProductVariant

logger = logging.getLogger(__name__)

DEMO_DIR = Path(__file__).resolve().parent
PRODUCTS_FILE = "mock_data_rs_products.sql"
FEEDBACK_FILE = "mock_data_rs_feedback.sql"
BATCH_SIZE = 1000

Row = dict[str, Any]


# -------------------------------------------------------------------------------------------------- files
def find_dump(directory: Path, name: str) -> Path:
    """``name`` or ``name.gz`` in ``directory``."""
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{name}(.gz) not found in {directory}")


def read_dump(path: Path) -> str:
    if path.suffix == ".gz":
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            return handle.read()
    return path.read_text(encoding="utf-8")


def tables_of(statements: Iterable[InsertStatement]) -> dict[str, list[Row]]:
    """Rows per table, in file order (stray rows included where they stand)."""
    tables: dict[str, list[Row]] = defaultdict(list)
    stray: Counter[str] = Counter()
    for statement in statements:
        if statement.stray:
            stray[statement.table] += len(statement.rows)
        tables[statement.table].extend(statement.dicts())
    for table, count in stray.items():
        logger.info("%s: %d stray row(s) after a statement's ';' kept", table, count)
    return tables


# ------------------------------------------------------------------------------------------- the mapping
def _fix_text(value: str | None) -> str | None:
    """The generator of the dump appended ``,false`` inside one quoted value: ``'(no genres listed,false)'``."""
    if value is not None and value.startswith("(") and value.endswith(",false)"):
        return value[: -len(",false)")] + ")"
    return value


def _first_per_key(rows: Sequence[Row], key: Any) -> tuple[list[tuple[int, Row]], dict[int, int]]:
    """Keep the first row of each natural key. Rows are numbered 1..N in file order (the serial ids the dump
    omits); returns the kept ``(id, row)`` pairs and a map from every id to the id of the row kept for its key."""
    kept: list[tuple[int, Row]] = []
    first: dict[Any, int] = {}
    alias: dict[int, int] = {}
    for number, row in enumerate(rows, start=1):
        natural = key(row)
        if natural not in first:
            first[natural] = number
            kept.append((number, row))
        alias[number] = first[natural]
    return kept, alias


def _category_objects(rows: Sequence[Row]) -> list[Row]:
    """Categories from the ancestor pairs: every id seen is a category; its parent is its deepest ancestor."""
    ancestors: dict[int, set[int]] = defaultdict(set)
    for row in rows:
        category, ancestor = row["category_id"], row["category_ancestor_id"]
        ancestors[category]
        ancestors[ancestor]
        if ancestor != category:
            ancestors[category].add(ancestor)
    objects = []
    for category in sorted(ancestors, key=lambda c: (len(ancestors[c]), c)):
        above = ancestors[category]
        parent = max(above, key=lambda a: (len(ancestors[a]), a)) if above else None
        objects.append({"_model_class": "Category", "id": category, "parent_id": parent})
    return objects


def demo_objects(products: dict[str, list[Row]], feedback: dict[str, list[Row]]) -> list[Row]:
    """The ``_model_class`` objects a shop would have sent for the demo data, in load order."""
    objects: list[Row] = []

    # attribute types: 1-5 and an identical copy 6-10
    types, type_alias = _first_per_key(products["attribute_type"], lambda r: (r["type_name"], r["unit"], r["type"]))
    for number, row in types:
        objects.append(
            {"_model_class": "AttributeType", "id": number, "type": row["type"], "type_name": row["type_name"],
             "unit": row["unit"], "deleted": row["deleted"]}
        )  # fmt: skip

    # attributes: 1-53 and an unreferenced copy 54-106
    for row in products["attribute"]:
        row["raw_value"] = _fix_text(row["raw_value"])
    attributes, attribute_alias = _first_per_key(
        products["attribute"], lambda r: (type_alias[r["attribute_type_id"]], r["raw_value"])
    )
    for number, row in attributes:
        objects.append(
            {"_model_class": "Attribute", "id": number, "type": type_alias[row["attribute_type_id"]],
             "raw_value": row["raw_value"], "order": row["order"], "ext_attributes": [], "deleted": row["deleted"]}
        )  # fmt: skip

    # product types: Test, Book, Movie and a copy of the three
    product_types, product_type_alias = _first_per_key(products["product_type"], lambda r: r["name"])
    type_links: dict[int, list[int]] = defaultdict(list)
    for row in products["attribute_type_product_type"]:
        links = type_links[product_type_alias[row["product_type_id"]]]
        attribute_type = type_alias[row["attribute_type_id"]]
        if attribute_type not in links:
            links.append(attribute_type)
    for number, row in product_types:
        objects.append(
            {"_model_class": "ProductType", "id": number, "name": row["name"], "attribute_types": type_links[number],
             "products": [], "create_at": row["create_at"], "update_at": row["update_at"], "deleted": row["deleted"]}
        )  # fmt: skip

    objects.extend(_category_objects(products["category_ancestor"]))

    # variants with their attributes (5 each)
    variant_attributes: dict[str, list[int]] = defaultdict(list)
    for row in products["attribute_product_variant"]:
        links = variant_attributes[row["product_variant_sku"]]
        attribute = attribute_alias[row["attribute_id"]]
        if attribute not in links:
            links.append(attribute)
    variants: dict[str, Row] = {}
    for row in products["product_variant"]:
        variants[row["sku"]] = row
    for sku, row in variants.items():
        objects.append(
            {"_model_class": "ProductVariant", "sku": sku, "ean": row["ean"], "weight": row["weight"],
             "stock_quantity": row["stock_quantity"], "recommendation_weight": row["recommendation_weight"],
             "attributes": variant_attributes[sku], "create_at": row["create_at"], "update_at": row["update_at"],
             "deleted": row["deleted"]}
        )  # fmt: skip

    # products: one per movie id of product_product_variant (the serial ids of the product rows match nothing)
    product_skus: dict[int, list[str]] = defaultdict(list)
    for row in products["product_product_variant"]:
        if row["product_variant_sku"] not in product_skus[row["product_id"]]:
            product_skus[row["product_id"]].append(row["product_variant_sku"])
    linked = {sku for skus in product_skus.values() for sku in skus}
    for sku in variants:
        movie = sku.split("-", 1)[0]
        if sku not in linked and movie.isdigit() and int(movie) in product_skus:
            product_skus[int(movie)].append(sku)  # SKUs are <movie id>-<language>-<resolution>
    product_rows = products["product"]
    category = Counter(r["category_id"] for r in product_rows).most_common(1)[0][0] if product_rows else None
    product_type = Counter(r["product_type_id"] for r in product_rows).most_common(1)[0][0] if product_rows else None
    for product_id, skus in product_skus.items():
        own = [variants[sku] for sku in skus if sku in variants]
        objects.append(
            {"_model_class": "Product", "id": product_id, "published": True, "category_id": category,
             "type_id": product_type, "product_variants": skus, "product_translations": [],
             "create_at": min((v["create_at"] for v in own), default=None),
             "update_at": max((v["update_at"] for v in own), default=None), "deleted": False}
        )  # fmt: skip

    # prices: every (price list, SKU) twice, identical
    prices, _ = _first_per_key(products["product_price"], lambda r: (r["price_list_code"], r["product_variant_sku"]))
    for number, (_, row) in enumerate(prices, start=1):
        objects.append(
            {"_model_class": "ProductPrice", "id": number, "price_list_code": row["price_list_code"],
             "product_variant_sku": row["product_variant_sku"], "price": row["price"], "create_at": row["create_at"],
             "update_at": row["update_at"], "deleted": row["deleted"]}
        )  # fmt: skip

    # orders with their lines; the feedback's session table names each session's user
    user_of_session = {row["id"]: row["user_id"] for row in feedback.get("session", ())}
    lines: dict[str, list[list[Any]]] = defaultdict(list)
    for row in products["order_product_variant"]:
        lines[row["order_token"]].append([row["product_variant_sku"], row["quantity"]])
    for row in products["order"]:
        objects.append(
            {"_model_class": "Order", "token": row["token"], "session_id": row["session_id"],
             "user_id": user_of_session.get(row["session_id"]), "product_variants": lines[row["token"]],
             "create_at": row["create_at"], "update_at": row["update_at"], "deleted": row["deleted"]}
        )  # fmt: skip

    # product-detail enters, in file order (they recreate the sessions and link them to their users)
    for row in feedback["product_detail_enter"]:
        objects.append(
            {"_model_class": "ProductDetailEnter", "session_id": row["session_id"], "user_id": row["user_id"],
             "product_id": row["product_id"], "product_variant_sku": row["product_variant_sku"],
             "recommendation_type": row["recommendation_type"], "model_identifier": row["model_identifier"],
             "model_name": row["model_name"], "position": row["position"], "create_at": row["create_at"]}
        )  # fmt: skip

    # reviews: every row twice, identical
    reviews, _ = _first_per_key(feedback["review"], lambda r: tuple(sorted(r.items())))
    for number, (_, row) in enumerate(reviews, start=1):
        objects.append(
            {"_model_class": "Review", "id": number, "session_id": row["session_id"], "user_id": row["user_id"],
             "product_id": row["product_id"], "product_variant_sku": row["product_variant_sku"],
             "rating": row["rating"], "create_at": row["create_at"], "update_at": row["update_at"]}
        )  # fmt: skip
    return objects


def read_demo(path: str | Path | None = None) -> list[Row]:
    """Parse the two dumps in ``path`` (default: the bundled copies) into the objects to store."""
    directory = Path(path) if path is not None else DEMO_DIR
    if directory.is_file():
        directory = directory.parent
    products = tables_of(parse_inserts(read_dump(find_dump(directory, PRODUCTS_FILE))))
    feedback = tables_of(parse_inserts(read_dump(find_dump(directory, FEEDBACK_FILE))))
    return demo_objects(products, feedback)


# ---------------------------------------------------------------------------------------------- loading
def load_demo(
    container: Any, path: str | Path | None = None, if_empty: bool = False, progress: bool = True
) -> dict[str, int] | None:
    """Read the demo dumps in ``path`` (default: the bundled copies) and store them (``load_objects``). With
    ``if_empty``, nothing happens when the catalogue already has variants (returns None)."""
    if if_empty:
        with container.database().session() as session:
            if session.scalar(select(func.count()).select_from(ProductVariant)):
                logger.info("the catalogue is not empty: demo data not loaded")
                return None
    return load_objects(container, read_demo(path), progress=progress)


def load_objects(container: Any, objects: Sequence[Row], progress: bool = True) -> dict[str, int]:
    """Store ingest objects through ``DataManager``: all validated first, then written in batches of
    ``BATCH_SIZE`` within one unit of work, so that a failure leaves nothing behind (and ``--if-empty`` retries
    the load on the next start). Returns the number of objects stored per ``_model_class``."""
    manager = container.data_manager()
    validated = [
        manager.validate_batch(objects[start : start + BATCH_SIZE], first_index=start)
        for start in range(0, len(objects), BATCH_SIZE)
    ]
    with tqdm(total=len(objects), desc="demo data", unit="obj", disable=not progress) as bar:
        manager.store_batches(validated, on_batch=bar.update)
    refresh_statistics(container.database())
    loaded = dict(Counter(obj["_model_class"] for obj in objects))
    logger.info("demo data loaded: %s", ", ".join(f"{count} {name}" for name, count in loaded.items()))
    return loaded


def refresh_statistics(database: Any) -> None:
    """``VACUUM ANALYZE`` after a bulk load on PostgreSQL: the planner sees the tables' real sizes at once, and the
    fresh rows get their visibility hints and map up front (until then every read checked the commit log: the
    history query of a prediction cost twice the database CPU). A no-op on SQLite."""
    if database.is_sqlite:
        return
    with database.engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM ANALYZE")
