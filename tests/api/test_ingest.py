"""``POST /store_object`` and ``POST /store_objects``: every class stored, atomic batches, 4xx JSON for every kind of
bad input, the backend's real payload shapes, timestamps stamped at arrival in UTC."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, text

from recommender_system.storage import revisions
from recommender_system.storage.events import EventStore
from recommender_system.storage.tables import (
    Attribute,
    AttributeType,
    Category,
    CategoryAncestor,
    ConfigVersion,
    OrderLine,
    Product,
    ProductAddToCart,
    ProductDetailEnter,
    ProductDetailLeave,
    ProductPrice,
    ProductProductVariant,
    ProductTranslation,
    ProductType,
    ProductTypeAttributeType,
    ProductVariant,
    RecommendationView,
    Review,
    ShopOrder,
    ShopSession,
    TrainingJob,
    VariantAttribute,
)

TOKEN = "95029f63-2a51-48b3-9028-ca77b76051d4"

# One object of every class, shaped as the ecoseller backend sends it (notes 1.4), extras included.
EVERY_CLASS = [
    {"_model_class": "Category", "id": 3, "parent_id": 2, "deleted": False},
    {"_model_class": "Category", "id": 2, "parent_id": None, "deleted": False},
    {"_model_class": "AttributeType", "id": 1, "type": "CATEGORICAL", "type_name": "GENRE", "unit": None},
    {"_model_class": "Attribute", "id": 11, "type": 1, "raw_value": "Drama", "order": 1, "ext_attributes": [],
     "deleted": False},
    {"_model_class": "ProductType", "id": 3, "name": "Movie", "attribute_types": [1], "products": [1],
     "update_at": "2023-07-08T15:38:52.345224", "create_at": "2023-07-08T15:38:32.98268", "deleted": False},
    {"_model_class": "ProductVariant", "sku": "1-en-720p", "ean": "", "weight": 138.0, "stock_quantity": 100,
     "recommendation_weight": 0.5, "update_at": "2023-07-17T21:26:53", "create_at": "2023-07-09T17:27:40",
     "attributes": [11], "deleted": False},
    {"_model_class": "Product", "id": 1, "published": True, "type": 3, "category_id": 3,
     "product_translations": [{"id": 1, "language_code": "en", "title": "Toy Story", "meta_title": "Toy Story",
                               "meta_description": "", "short_description": None, "description": "",
                               "slug": "toy-story"}],
     "product_variants": ["1-en-720p"], "update_at": "2023-07-09T17:38:11", "create_at": "2023-07-09T17:38:11",
     "deleted": False},
    {"_model_class": "ProductTranslation", "id": 2, "product_id": 1, "language_code": "cs", "title": "Toy Story CZ"},
    {"_model_class": "ProductPrice", "id": 1, "price_list_code": "EUR_retail", "product_variant_sku": "1-en-720p",
     "price": 17.09, "update_at": "2023-07-09T17:38:10", "create_at": "2023-07-09T17:34:56", "deleted": False},
    {"_model_class": "Order", "token": TOKEN, "customer_email": "a@b.cz", "order": {"token": TOKEN, "items": []},
     "product_variants": [["1-en-720p", 2]], "session_id": "s1"},
    {"_model_class": "ProductDetailEnter", "session_id": "s1", "user_id": None, "product_id": 1,
     "product_variant_sku": "1-en-720p"},
    {"_model_class": "ProductDetailLeave", "session_id": "s1", "user_id": None, "product_id": 1,
     "product_variant_sku": "1-en-720p", "time_spent": 12.5},
    {"_model_class": "ProductAddToCart", "session_id": "s1", "product_id": 1, "product_variant_sku": "1-en-720p"},
    {"_model_class": "RecommendationView", "session_id": "s2", "product_id": 1, "product_variant_sku": "1-en-720p",
     "recommendation_type": "HOMEPAGE", "model_identifier": "ease_1", "position": 0},
    {"_model_class": "Review", "id": 1, "session_id": "s1", "user_id": 7, "product_id": 1,
     "product_variant_sku": "1-en-720p", "rating": 4},
    {"_model_class": "Config", "retrievalSize": 500, "orderingSize": 20, "models": [], "info": {},
     "categoryListRetrievalCascade": None, "easeConfig": {"l2Options": [50.0]}, "gru4recConfig": {}},
    {"_model_class": "TrainerQueueItem", "model_name": "ease"},
]  # fmt: skip

TABLES = {
    "Category": Category,
    "AttributeType": AttributeType,
    "Attribute": Attribute,
    "ProductType": ProductType,
    "ProductVariant": ProductVariant,
    "Product": Product,
    "ProductTranslation": ProductTranslation,
    "ProductPrice": ProductPrice,
    "Order": ShopOrder,
    "ProductDetailEnter": ProductDetailEnter,
    "ProductDetailLeave": ProductDetailLeave,
    "ProductAddToCart": ProductAddToCart,
    "RecommendationView": RecommendationView,
    "Review": Review,
    "Config": ConfigVersion,
    "TrainerQueueItem": TrainingJob,
}
ALL_TABLES = [
    *TABLES.values(), CategoryAncestor, OrderLine, ProductProductVariant, ProductTypeAttributeType, ShopSession,
    VariantAttribute,
]  # fmt: skip


def counts(database) -> dict[str, int]:  # type: ignore[no-untyped-def]
    with database.session() as session:
        return {t.__tablename__: session.scalar(select(func.count()).select_from(t)) for t in ALL_TABLES}


def revision_numbers(database) -> dict[str, int]:  # type: ignore[no-untyped-def]
    with database.session() as session:
        return revisions.read_all(session)


def post(client, path: str, body) -> tuple[int, dict]:  # type: ignore[no-untyped-def,type-arg]
    response = client.post(path, data=json.dumps(body), content_type="application/json")
    assert response.is_json, response.data[:200]
    return response.status_code, response.get_json()


def enter(**extra):  # type: ignore[no-untyped-def]
    return {
        "_model_class": "ProductDetailEnter",
        "session_id": "s1",
        "product_id": 1,
        "product_variant_sku": "a",
        **extra,
    }


def test_every_class_is_stored_in_one_batch_and_read_back(client, database) -> None:
    assert {item["_model_class"] for item in EVERY_CLASS} == set(TABLES)
    status, body = post(client, "/store_objects", EVERY_CLASS)
    assert (status, body) == (200, {"stored": len(EVERY_CLASS)})
    stored = counts(database)
    assert {name: stored[table.__tablename__] for name, table in TABLES.items()} == {
        **{name: 1 for name in TABLES},
        "Category": 2,
        "ProductTranslation": 2,
    }
    assert stored["category_ancestor"] == 3 and stored["order_line"] == 1 and stored["shop_session"] == 2
    with database.session() as session:
        product = session.scalars(select(Product)).one()
        assert (product.product_type_id, product.category_id, product.created_at) == (
            3,
            3,
            datetime(2023, 7, 9, 17, 38, 11),
        )
        assert session.scalar(select(OrderLine.quantity)) == 2
        assert session.scalar(select(TrainingJob.model_name).where(TrainingJob.status == "pending")) == "ease"
        assert session.scalar(select(ConfigVersion.body))["retrievalSize"] == 500
        assert session.scalar(select(ShopSession.user_id).where(ShopSession.id == "s1")) == "7"


def test_each_class_alone_through_store_object(client, database) -> None:
    for item in EVERY_CLASS:
        status, body = post(client, "/store_object", item)
        assert (status, body) == (200, {"stored": 1}), item["_model_class"]
    stored = counts(database)
    assert all(stored[table.__tablename__] >= 1 for table in TABLES.values())


def test_revisions_are_bumped_once_per_batch(client, database) -> None:
    before = revision_numbers(database)
    assert post(client, "/store_objects", EVERY_CLASS)[0] == 200
    after = revision_numbers(database)
    assert {name: after[name] - before[name] for name in after} == {
        "catalog": 1, "orders": 1, "events": 1, "config": 1, "models": 0
    }  # fmt: skip
    post(client, "/store_objects", [enter(), enter()])
    assert revision_numbers(database)["events"] == after["events"] + 1
    assert revision_numbers(database)["catalog"] == after["catalog"]


def test_an_invalid_item_in_the_middle_stores_nothing(client, database) -> None:
    before = counts(database)
    batch = [*EVERY_CLASS[:3], {**EVERY_CLASS[5], "stock_quantity": "many"}, *EVERY_CLASS[6:]]
    status, body = post(client, "/store_objects", batch)
    assert status == 400
    assert body["error"].startswith("item 3: invalid field 'stock_quantity'")
    assert body["details"][0]["index"] == 3 and body["details"][0]["field"] == "stock_quantity"
    assert counts(database) == before


class FailingEventStore(EventStore):
    """Fails in the database after the catalogue of the batch has been written."""

    def append_events(self, session, model_class, items, now):  # type: ignore[no-untyped-def]
        super().append_events(session, model_class, items, now)
        session.execute(text("SELECT no_such_column FROM product_detail_enter"))  # fails in the database


def test_a_database_failure_rolls_the_whole_batch_back(container, database) -> None:
    from recommender_system.app import create_app

    container.event_store.override(FailingEventStore())
    try:
        client = create_app(container).test_client()
        before = counts(database)
        status, body = post(client, "/store_objects", EVERY_CLASS)
    finally:
        container.event_store.reset_override()
    assert status == 500 and body["error"] == "internal error"
    assert counts(database) == before


class BrokenInsertEventStore(EventStore):
    def append_events(self, session, model_class, items, now):  # type: ignore[no-untyped-def]
        super().append_events(session, model_class, items, now)
        session.execute(
            ProductDetailEnter.__table__.insert(), [{"id": 1, "session_id": "x", "product_variant_sku": "y"}] * 2
        )


def test_a_constraint_violation_rolls_the_whole_batch_back(container, database) -> None:
    from recommender_system.app import create_app

    container.event_store.override(BrokenInsertEventStore())
    try:
        status, _ = post(create_app(container).test_client(), "/store_objects", EVERY_CLASS)
    finally:
        container.event_store.reset_override()
    assert status == 500
    assert all(count == 0 for count in counts(database).values())


BAD_BODIES = {
    "empty body": ("/store_objects", b""),
    "malformed JSON": ("/store_objects", b'[{"_model_class": "ProductDetailEnter",'),
    "array to store_object": ("/store_object", b"[]"),
    "object to store_objects": ("/store_objects", b'{"_model_class": "Category", "id": 1}'),
    "scalar to store_objects": ("/store_objects", b"42"),
    "item not an object": ("/store_objects", b'[{"_model_class": "Category", "id": 1}, "Category"]'),
    "nested too deeply": ("/store_objects", b"[" * 100_000 + b"]" * 100_000),
}


def test_malformed_requests_are_400_json(client) -> None:
    for name, (path, raw) in BAD_BODIES.items():
        response = client.post(path, data=raw, content_type="application/json")
        assert response.status_code == 400, name
        assert response.is_json and response.get_json()["error"], name


BAD_OBJECTS = {
    "unknown class": ({"_model_class": "Customer", "id": 1}, "_model_class"),
    "class in lower case": ({"_model_class": "category", "id": 1}, "_model_class"),
    "missing class": ({"id": 1, "parent_id": None}, "_model_class"),
    "class not a string": ({"_model_class": ["Category"], "id": 1}, "_model_class"),
    "missing field": ({"_model_class": "ProductVariant", "sku": "a", "ean": "", "recommendation_weight": 1,
                       "attributes": []}, "stock_quantity"),
    "wrong type": ({"_model_class": "Category", "id": "three"}, "id"),
    "wrong list type": ({"_model_class": "Product", "id": 1, "published": True, "product_variants": "a,b"},
                        "product_variants"),
    "invalid UUID token": ({"_model_class": "Order", "token": "not-a-uuid", "session_id": "s", "product_variants": []},
                           "token"),
    "bad order line": ({"_model_class": "Order", "token": TOKEN, "session_id": "s", "product_variants": [["a"]]},
                       "product_variants.0.1"),
    "unknown model name": ({"_model_class": "TrainerQueueItem", "model_name": "word2vec"}, "model_name"),
    "untrainable model": ({"_model_class": "TrainerQueueItem", "model_name": "dummy"}, "model_name"),
    "invalid cascade": ({"_model_class": "Config", "homepageRetrievalCascade": ["gru4rec", "dummy"]},
                        "homepageRetrievalCascade"),
    "unknown model in cascade": ({"_model_class": "Config", "cartScoringCascade": ["nope"]}, "cartScoringCascade"),
    "unknown disabled model": ({"_model_class": "Config", "modelsDisabled": {"nope": True}}, "models_disabled"),
    "translation without product": ({"_model_class": "ProductTranslation", "id": 1, "language_code": "en"},
                                    "product_id"),
    "empty session id": (enter(session_id=""), "session_id"),
    "too long SKU": (enter(product_variant_sku="x" * 300), "product_variant_sku"),
    "int out of range": (enter(product_id=2**40), "product_id"),
    "NUL in a string": (enter(product_variant_sku="a\x00b"), "product_variant_sku"),
    "user id object": (enter(user_id={"email": "a@b.cz"}), "user_id"),
    "bad timestamp": (enter(create_at="yesterday"), "create_at"),
    "timestamp out of range in UTC": (enter(create_at="0001-01-01T00:30:00+01:00"), "create_at"),
    "fractional int": (enter(product_id=1.5), "product_id"),
    "non-finite float": ({"_model_class": "ProductPrice", "id": 1, "price_list_code": "EUR", "price": "NaN"}, "price"),
}  # fmt: skip


def test_bad_objects_are_400_json_naming_index_and_field(client, database) -> None:
    for name, (bad, field) in BAD_OBJECTS.items():
        status, body = post(client, "/store_object", bad)
        assert status == 400, name
        assert body["details"][0]["field"] == field, name
        assert f"'{field}'" in body["error"], name
        status, body = post(client, "/store_objects", [enter(), enter(), bad])
        assert status == 400, name
        assert body["error"].startswith("item 2: "), name
        assert body["details"][0]["index"] == 2 and body["details"][0]["field"] == field, name
    assert counts(database)["product_detail_enter"] == 0


def test_camel_case_and_snake_case_and_unknown_keys(client, database) -> None:
    batch = [
        {"_model_class": "ProductVariant", "sku": "a", "ean": "", "stockQuantity": 3, "recommendationWeight": 0.2,
         "attributes": [], "createAt": "2023-01-01T00:00:00", "colour": "red"},
        {"_model_class": "ProductVariant", "sku": "b", "ean": "", "stock_quantity": 4, "recommendation_weight": 0.3,
         "attributes": [], "create_at": "2023-01-02T00:00:00", "nested": {"x": [1]}},
        {"_model_class": "ProductDetailEnter", "sessionId": "s9", "userId": "12", "productId": 1,
         "productVariantSku": "a", "modelName": "ease", "recommendationType": "HOMEPAGE", "position": "3"},
    ]  # fmt: skip
    assert post(client, "/store_objects", batch)[0] == 200
    with database.session() as session:
        variants = {
            v.sku: (v.stock_quantity, v.recommendation_weight, v.created_at)
            for v in session.scalars(select(ProductVariant))
        }
        e = session.scalars(select(ProductDetailEnter)).one()
    assert variants == {"a": (3, 0.2, datetime(2023, 1, 1)), "b": (4, 0.3, datetime(2023, 1, 2))}
    assert (e.session_id, e.user_id, e.model_name, e.recommendation_type, e.position) == (
        "s9",
        "12",
        "ease",
        "HOMEPAGE",
        3,
    )


def test_user_id_as_int_string_or_null(client, database) -> None:
    cases = {
        "s-null": (None, None),
        "s-int": (42, "42"),
        "s-numeric": ("42", "42"),
        "s-mail": ("jane@shop.cz", "jane@shop.cz"),
    }
    for session_id, (user_id, _) in cases.items():
        assert post(client, "/store_object", enter(session_id=session_id, user_id=user_id))[0] == 200
    with database.session() as session:
        events = dict(session.execute(select(ProductDetailEnter.session_id, ProductDetailEnter.user_id)).all())
        sessions = dict(session.execute(select(ShopSession.id, ShopSession.user_id)).all())
    expected = {session_id: stored for session_id, (_, stored) in cases.items()}
    assert events == expected and sessions == expected


def test_missing_timestamps_are_stamped_at_arrival_in_utc(client, database) -> None:
    start = datetime.now(UTC).replace(tzinfo=None)
    assert post(client, "/store_objects", [enter(product_variant_sku="first")])[0] == 200
    time.sleep(0.05)
    assert post(client, "/store_objects", [enter(product_variant_sku="second")])[0] == 200
    end = datetime.now(UTC).replace(tzinfo=None)
    with database.session() as session:
        stamps = dict(
            session.execute(select(ProductDetailEnter.product_variant_sku, ProductDetailEnter.created_at)).all()
        )
    assert start <= stamps["first"] < stamps["second"] <= end
    assert stamps["second"] - stamps["first"] >= timedelta(milliseconds=40)


def test_client_timestamps_are_converted_to_naive_utc(client, database) -> None:
    cases = {
        "offset": ("2023-07-18T03:05:12+02:00", datetime(2023, 7, 18, 1, 5, 12)),
        "zulu": ("2023-07-18T01:05:12.5Z", datetime(2023, 7, 18, 1, 5, 12, 500000)),
        "naive": ("2023-07-18 01:05:12", datetime(2023, 7, 18, 1, 5, 12)),
        "epoch": (1689642312, datetime(2023, 7, 18, 1, 5, 12)),
        "epoch-ms": (1689642312000, datetime(2023, 7, 18, 1, 5, 12)),
    }
    batch = [enter(product_variant_sku=name, create_at=sent) for name, (sent, _) in cases.items()]
    assert post(client, "/store_objects", batch)[0] == 200
    with database.session() as session:
        stored = dict(
            session.execute(select(ProductDetailEnter.product_variant_sku, ProductDetailEnter.created_at)).all()
        )
    assert stored == {name: expected for name, (_, expected) in cases.items()}


def test_deleted_and_published_are_stored(client, database) -> None:
    batch = [
        {"_model_class": "Product", "id": 1, "published": False, "product_variants": ["a"]},
        {"_model_class": "Product", "id": 2, "published": "true", "deleted": "true", "product_variants": ["b"]},
        {"_model_class": "ProductVariant", "sku": "a", "ean": "", "stock_quantity": 1, "recommendation_weight": 1,
         "attributes": [], "deleted": True},
        {"_model_class": "ProductPrice", "id": 5, "price_list_code": "EUR", "price": 3, "deleted": True},
    ]  # fmt: skip
    assert post(client, "/store_objects", batch)[0] == 200
    with database.session() as session:
        products = dict(session.execute(select(Product.id, Product.published)).all())
        deleted = dict(session.execute(select(Product.id, Product.deleted)).all())
        assert session.scalar(select(ProductVariant.deleted)) is True
        assert session.scalar(select(ProductPrice.deleted)) is True
    assert products == {1: False, 2: True} and deleted == {1: False, 2: True}


def test_order_and_review_re_sends_are_idempotent(client, database) -> None:
    order = {"_model_class": "Order", "token": TOKEN, "session_id": "s1", "product_variants": [["a", 1], ["b", 2]]}
    review = {"_model_class": "Review", "id": 9, "session_id": "s1", "user_id": 1, "product_id": 1,
              "product_variant_sku": "a", "rating": 5}  # fmt: skip
    for _ in range(3):
        assert post(client, "/store_objects", [order, review])[0] == 200
    stored = counts(database)
    assert (stored["shop_order"], stored["order_line"], stored["review"]) == (1, 2, 1)


def test_trainer_queue_items_coalesce_into_one_pending_job(client, database) -> None:
    for _ in range(2):
        assert post(client, "/store_object", {"_model_class": "TrainerQueueItem", "model_name": "gru4rec"})[0] == 200
    with database.session() as session:
        jobs = list(session.execute(select(TrainingJob.model_name, TrainingJob.status)))
    assert jobs == [("gru4rec", "pending")]


def test_config_from_the_dashboard_is_saved_with_disabled_models_by_index(client, database) -> None:
    body = {"_model_class": "Config", "models": [{"name": "dummy"}, {"name": "selection"}, {"name": "ease"}],
            "modelsDisabled": {"2": True}, "homepageScoringCascade": ["ease", "popularity", "selection"]}  # fmt: skip
    assert post(client, "/store_object", body)[0] == 200
    with database.session() as session:
        saved = session.scalar(select(ConfigVersion.body))
    assert saved["models_disabled"] == {"ease": True}
    assert saved["homepageScoringCascade"] == ["ease", "popularity", "selection"]


def test_empty_batch_is_accepted(client) -> None:
    assert post(client, "/store_objects", []) == (200, {"stored": 0})
