"""CatalogStore on SQLite and PostgreSQL: upserts by key, relation lists replaced, category ancestry kept right."""

from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy import select

from recommender_system.api.schemas import ingest
from recommender_system.storage.catalog import CatalogStore
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

NOW = datetime(2024, 5, 1, 12, 0, 0)
LATER = datetime(2024, 5, 2, 12, 0, 0)

store = CatalogStore()


def variant(sku: str, attributes: list[int], **extra) -> ingest.ProductVariantIn:  # type: ignore[no-untyped-def]
    body = {"sku": sku, "ean": "", "stock_quantity": 5, "recommendation_weight": 0.5, "attributes": attributes}
    return ingest.ProductVariantIn.model_validate({**body, **extra})


def product(pid: int, skus: list[str], **extra) -> ingest.ProductIn:  # type: ignore[no-untyped-def]
    return ingest.ProductIn.model_validate({"id": pid, "published": True, "product_variants": skus, **extra})


def category(cid: int, parent: int | None, **extra) -> ingest.CategoryIn:  # type: ignore[no-untyped-def]
    return ingest.CategoryIn.model_validate({"id": cid, "parent_id": parent, **extra})


def ancestry(database) -> set[tuple[int, int, int]]:  # type: ignore[no-untyped-def]
    with database.session() as session:
        rows = session.execute(
            select(CategoryAncestor.category_id, CategoryAncestor.ancestor_id, CategoryAncestor.depth)
        )
        return {tuple(row) for row in rows}


def save_categories(database, *items: ingest.CategoryIn) -> None:  # type: ignore[no-untyped-def]
    with database.write_session() as session:
        store.upsert_categories(session, items, NOW)


def test_attribute_types_and_attributes_upsert_by_id(database) -> None:
    with database.write_session() as session:
        store.upsert_attribute_types(
            session,
            [ingest.AttributeTypeIn.model_validate({"id": 1, "type": "CATEGORICAL", "type_name": "GENRE"})],
            NOW,
        )
        store.upsert_attributes(
            session,
            [
                ingest.AttributeIn.model_validate({"id": 1, "type": 1, "raw_value": "1995", "ext_attributes": [9]}),
                ingest.AttributeIn.model_validate({"id": 2, "type": 1, "raw_value": "Drama", "order": 3}),
                ingest.AttributeIn.model_validate({"id": 3, "type": 1, "raw_value": None}),
            ],
            NOW,
        )
    with database.write_session() as session:  # a second send of the same ids updates them
        store.upsert_attribute_types(
            session, [ingest.AttributeTypeIn.model_validate({"id": 1, "type": "NUMERICAL", "unit": "y"})], LATER
        )
        store.upsert_attributes(
            session,
            [ingest.AttributeIn.model_validate({"id": 2, "type": 1, "raw_value": "7.5", "deleted": True})],
            LATER,
        )
    with database.session() as session:
        types = session.execute(
            select(AttributeType.id, AttributeType.type, AttributeType.type_name, AttributeType.unit)
        )
        assert list(types) == [(1, "NUMERICAL", None, "y")]
        attributes = {
            row.id: (row.attribute_type_id, row.raw_value, row.numeric_value, row.order, row.deleted)
            for row in session.scalars(select(Attribute))
        }
    assert attributes == {
        1: (1, "1995", 1995.0, None, False),
        2: (1, "7.5", 7.5, None, True),
        3: (1, None, None, None, False),
    }


def test_product_type_relations_are_replaced_and_name_may_be_null(database) -> None:
    with database.write_session() as session:
        store.upsert_product_types(
            session,
            [ingest.ProductTypeIn.model_validate({"id": 3, "name": "Movie", "attribute_types": [1, 2, 3]})],
            NOW,
        )
    with database.write_session() as session:
        store.upsert_product_types(
            session, [ingest.ProductTypeIn.model_validate({"id": 3, "name": None, "attribute_types": [4, 2]})], LATER
        )
    with database.session() as session:
        assert list(session.execute(select(ProductType.id, ProductType.name))) == [(3, None)]
        links = set(
            session.execute(
                select(ProductTypeAttributeType.product_type_id, ProductTypeAttributeType.attribute_type_id)
            )
        )
    assert links == {(3, 4), (3, 2)}


def test_category_ancestry_has_self_rows_and_every_ancestor(database) -> None:
    save_categories(database, category(1, None), category(2, 1), category(3, 2), category(4, 1))
    assert ancestry(database) == {
        (1, 1, 0),
        (2, 2, 0), (2, 1, 1),
        (3, 3, 0), (3, 2, 1), (3, 1, 2),
        (4, 4, 0), (4, 1, 1),
    }  # fmt: skip


def test_moving_a_category_takes_its_descendants_along(database) -> None:
    save_categories(database, category(1, None), category(2, 1), category(3, 2), category(4, 3), category(9, None))
    save_categories(database, category(2, 9))  # 2 (with 3 and 4 below it) moves under 9
    assert ancestry(database) == {
        (1, 1, 0),
        (9, 9, 0),
        (2, 2, 0), (2, 9, 1),
        (3, 3, 0), (3, 2, 1), (3, 9, 2),
        (4, 4, 0), (4, 3, 1), (4, 2, 2), (4, 9, 3),
    }  # fmt: skip
    with database.session() as session:
        assert session.scalar(select(Category.parent_id).where(Category.id == 2)) == 9


def test_child_before_its_parent_is_fixed_up_when_the_parent_arrives(database) -> None:
    save_categories(database, category(3, 2))
    assert ancestry(database) == {(3, 3, 0), (3, 2, 1)}
    save_categories(database, category(5, 3))
    save_categories(database, category(2, 1))  # the parent arrives, itself below a root not stored yet
    save_categories(database, category(1, None))
    assert ancestry(database) == {
        (1, 1, 0),
        (2, 2, 0), (2, 1, 1),
        (3, 3, 0), (3, 2, 1), (3, 1, 2),
        (5, 5, 0), (5, 3, 1), (5, 2, 2), (5, 1, 3),
    }  # fmt: skip


def test_child_and_parent_in_one_batch_in_any_order(database) -> None:
    save_categories(database, category(3, 2), category(2, None))
    assert ancestry(database) == {(2, 2, 0), (3, 3, 0), (3, 2, 1)}


def test_deleted_category_leaves_the_tree_and_hides_its_subtree_from_ancestors(database) -> None:
    save_categories(database, category(1, None), category(2, 1), category(3, 2))
    save_categories(database, category(2, 1, deleted=True))
    assert ancestry(database) == {(1, 1, 0), (3, 3, 0)}
    with database.session() as session:
        assert session.scalar(select(Category.deleted).where(Category.id == 2)) is True
    save_categories(database, category(2, 1, deleted=False))  # restored: the subtree is back under 1
    assert (3, 1, 2) in ancestry(database)


def test_parent_cycle_does_not_loop(database) -> None:
    save_categories(database, category(1, 2), category(2, 1))
    assert ancestry(database) == {(1, 1, 0), (1, 2, 1), (2, 2, 0), (2, 1, 1)}


def test_products_upsert_and_replace_their_variants_and_translations(database) -> None:
    created = datetime(2023, 7, 9, 17, 38, 11)
    with database.write_session() as session:
        store.upsert_products(
            session,
            [
                product(
                    1,
                    ["a", "b"],
                    type=3,
                    category_id=7,
                    create_at=created,
                    product_translations=[{"id": 10, "language_code": "en", "title": "Heat"}],
                ),
                product(2, ["c"], published=False),
            ],
            NOW,
        )
    with database.write_session() as session:  # re-send without timestamps: created_at stays, updated_at moves
        store.upsert_products(
            session,
            [product(1, ["b", "d"], product_translations=[{"id": 11, "language_code": "cs", "title": "Nahoru"}])],
            LATER,
        )
    with database.session() as session:
        products = {p.id: p for p in session.scalars(select(Product))}
        links = set(
            session.execute(select(ProductProductVariant.product_id, ProductProductVariant.product_variant_sku))
        )
        translations = list(
            session.execute(select(ProductTranslation.id, ProductTranslation.product_id, ProductTranslation.title))
        )
    assert products[1].created_at == created and products[1].updated_at == LATER
    assert products[1].product_type_id is None and products[1].category_id is None  # the re-send sent neither
    assert products[2].published is False and products[2].created_at == NOW
    assert links == {(1, "b"), (1, "d"), (2, "c")}
    assert translations == [(11, 1, "Nahoru")]


def test_product_type_sent_as_type_is_stored(database) -> None:
    with database.write_session() as session:
        store.upsert_products(session, [product(1, [], type=3, deleted=True)], NOW)
    with database.session() as session:
        row = session.scalars(select(Product)).one()
    assert (row.product_type_id, row.deleted) == (3, True)


def test_standalone_translation_attaches_to_its_product(database) -> None:
    with database.write_session() as session:
        store.upsert_translations(
            session,
            [
                ingest.ProductTranslationIn.model_validate(
                    {"id": 5, "product_id": 1, "language_code": "en", "slug": "x"}
                )
            ],
        )
        store.upsert_translations(
            session,
            [ingest.ProductTranslationIn.model_validate({"id": 5, "productId": 2, "languageCode": "de", "slug": "y"})],
        )
    with database.session() as session:
        assert list(
            session.execute(
                select(
                    ProductTranslation.id,
                    ProductTranslation.product_id,
                    ProductTranslation.language_code,
                    ProductTranslation.slug,
                )
            )
        ) == [(5, 2, "de", "y")]


def test_variants_upsert_and_replace_their_attributes(database) -> None:
    with database.write_session() as session:
        store.upsert_variants(
            session, [variant("a", [1, 2, 3]), variant("b", [1], update_at="2020-01-01T00:00:00")], NOW
        )
    with database.write_session() as session:
        store.upsert_variants(session, [variant("a", [3, 4], stock_quantity=0, deleted=True)], LATER)
    with database.session() as session:
        variants = {
            v.sku: (v.stock_quantity, v.deleted, v.created_at, v.updated_at)
            for v in session.scalars(select(ProductVariant))
        }
        links = set(session.execute(select(VariantAttribute.product_variant_sku, VariantAttribute.attribute_id)))
    assert variants == {"a": (0, True, NOW, LATER), "b": (5, False, NOW, NOW)}  # updated_at: when our copy changed
    assert links == {("a", 3), ("a", 4), ("b", 1)}


def test_the_last_send_of_a_key_in_one_batch_wins(database) -> None:
    with database.write_session() as session:
        store.upsert_variants(session, [variant("a", [1]), variant("a", [2], stock_quantity=9)], NOW)
        store.upsert_products(session, [product(1, ["a"]), product(1, ["b"])], NOW)
    with database.session() as session:
        assert session.scalar(select(ProductVariant.stock_quantity)) == 9
        assert list(session.scalars(select(VariantAttribute.attribute_id))) == [2]
        assert list(session.scalars(select(ProductProductVariant.product_variant_sku))) == ["b"]


def test_prices_upsert_by_id(database) -> None:
    price = ingest.ProductPriceIn.model_validate
    with database.write_session() as session:
        store.upsert_prices(
            session,
            [
                price({"id": 1, "price_list_code": "EUR_retail", "product_variant_sku": "a", "price": 10}),
                price({"id": 2, "priceListCode": "CZK_retail", "productVariantSku": "a", "price": 250.5}),
            ],
            NOW,
        )
        store.upsert_prices(session, [price({"id": 1, "price_list_code": "EUR_retail", "price": 12.5})], LATER)
    with database.session() as session:
        rows = set(
            session.execute(
                select(
                    ProductPrice.id, ProductPrice.price_list_code, ProductPrice.product_variant_sku, ProductPrice.price
                )
            )
        )
    assert rows == {(1, "EUR_retail", None, 12.5), (2, "CZK_retail", "a", 250.5)}


@pytest.mark.parametrize("count", [1200])
def test_large_batches_are_written_whole(database, count: int) -> None:
    with database.write_session() as session:
        store.upsert_variants(session, [variant(f"sku-{i}", [i % 7, 100 + i % 3]) for i in range(count)], NOW)
    with database.write_session() as session:  # replacing the relations of many variants at once
        store.upsert_variants(session, [variant(f"sku-{i}", [1]) for i in range(count)], LATER)
    with database.session() as session:
        assert len(session.scalars(select(ProductVariant.sku)).all()) == count
        assert sorted(set(session.scalars(select(VariantAttribute.attribute_id)))) == [1]
