"""``POST /predict`` and ``POST /predict/product_positions`` through the Flask client, on both backends: every
quirk the live backend sends (notes 1.5), the response shape, exclusions, the 4xx bodies, product positions with
descendant categories, config hot reload (synchronous refresh and the background thread) and the prediction log."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from sqlalchemy import func, select

from recommender_system.api.schemas.predict import PredictResponse, ProductPositionsResponse
from recommender_system.prediction.config import PipelineConfig
from recommender_system.storage.tables import PredictionLog, ShopSession
from tests.factories import SHOP_RECOMMENDABLE, seed_shop

UUID = "5f0c2a43-3c84-4d5c-a4a9-0e7f3b1d2c11"


@pytest.fixture
def shop(app, database):  # type: ignore[no-untyped-def]
    """The app serving the small shop of ``tests.factories.seed_shop``."""
    with database.write_session() as session:
        seed_shop(session)
    app.container.model_manager().refresh()
    return app.test_client()


def predict(client, body: Any, path: str = "/predict"):  # type: ignore[no-untyped-def]
    return client.post(path, data=json.dumps(body), content_type="application/json")


def skus(response) -> list[str]:  # type: ignore[no-untyped-def]
    assert response.status_code == 200, response.get_json()
    return [item["product_variant_sku"] for item in response.get_json()]


# --- what the live backend really sends ---------------------------------------------------------------------------
BACKEND_BODIES = {
    "product detail, comma-joined variants and extra keys": {
        "recommendation_type": "PRODUCT_DETAIL", "session_id": UUID, "user_id": None, "limit": 10,
        "product_id": 10, "variants": "A1,A2", "country": "cz", "pricelist": "CZK_retail",
    },
    "product detail, one numeric SKU as an int": {
        "recommendation_type": "PRODUCT_DETAIL", "session_id": UUID, "user_id": None, "limit": 10,
        "product_id": 60, "variants": 12345, "country": "cz", "pricelist": "CZK_retail",
    },
    "cart, empty string": {
        "recommendation_type": "CART", "session_id": UUID, "user_id": None, "limit": 10, "variants_in_cart": "",
    },
    "cart, comma-joined": {
        "recommendation_type": "CART", "session_id": UUID, "user_id": None, "limit": 10,
        "variants_in_cart": "A1,C1",
    },
    "cart, list": {"recommendation_type": "CART", "session_id": UUID, "limit": 10, "variants_in_cart": ["A1"]},
    "homepage, session undefined": {
        "recommendation_type": "HOMEPAGE", "session_id": "undefined", "user_id": None, "limit": 10,
    },
    "homepage, session null": {"recommendation_type": "HOMEPAGE", "session_id": None, "user_id": None, "limit": 4},
    "homepage, session missing, user int": {"recommendation_type": "HOMEPAGE", "user_id": 7},
    "homepage, empty session, user string, limit string": {
        "recommendation_type": "HOMEPAGE", "session_id": "", "user_id": "7", "limit": "3",
    },
    "homepage, limit null": {"recommendation_type": "HOMEPAGE", "session_id": UUID, "user_id": None, "limit": None},
    "category list": {
        "recommendation_type": "CATEGORY_LIST", "session_id": UUID, "user_id": None, "limit": 10, "category_id": 1,
    },
    "category list, category id as a string": {
        "recommendation_type": "CATEGORY_LIST", "session_id": UUID, "category_id": "2",
    },
    "product detail, unknown SKU": {"recommendation_type": "PRODUCT_DETAIL", "variants": "no-such-sku", "limit": 2},
    "lower-case type": {"recommendation_type": "homepage", "limit": 2},
}  # fmt: skip


def test_every_backend_quirk_answers_200_with_the_contract_shape(shop) -> None:  # type: ignore[no-untyped-def]
    for case, body in BACKEND_BODIES.items():
        response = predict(shop, body)
        assert response.status_code == 200, (case, response.get_json())
        items = response.get_json()
        PredictResponse.model_validate(items)
        assert items, f"{case}: the shop has eligible variants for every page"
        returned = skus(response)
        assert len(returned) == len(set(returned)), case
        limit = body.get("limit")
        if limit is not None:
            assert len(returned) <= int(limit), case
        page = body["recommendation_type"].upper()
        for position, item in enumerate(items):
            assert set(item) == {"product_variant_sku", "rs_info"}, case
            assert item["rs_info"] == {
                "recommendation_type": page,
                "model_name": items[0]["rs_info"]["model_name"],
                "model_identifier": items[0]["rs_info"]["model_identifier"],
                "position": position,
            }, case
        if page != "CATEGORY_LIST":
            assert set(returned) <= SHOP_RECOMMENDABLE, case


def test_page_exclusions(shop) -> None:  # type: ignore[no-untyped-def]
    detail = skus(predict(shop, BACKEND_BODIES["product detail, comma-joined variants and extra keys"]))
    assert not {"A1", "A2"} & set(detail)
    numeric = skus(predict(shop, BACKEND_BODIES["product detail, one numeric SKU as an int"]))
    assert "12345" not in numeric and "C1" in numeric
    cart = skus(predict(shop, BACKEND_BODIES["cart, comma-joined"]))
    assert not {"A1", "C1"} & set(cart) and "B1" in cart
    # popularity (A1 3 units, C1 2, B1 1) ranks the homepage; limits are exact
    assert skus(predict(shop, {"recommendation_type": "HOMEPAGE", "limit": 3})) == ["A1", "C1", "B1"]
    everything = skus(predict(shop, {"recommendation_type": "HOMEPAGE"}))
    assert set(everything) == SHOP_RECOMMENDABLE


def test_category_list_includes_descendants_and_puts_out_of_stock_last(shop) -> None:  # type: ignore[no-untyped-def]
    listing = skus(predict(shop, {"recommendation_type": "CATEGORY_LIST", "category_id": 1, "session_id": "s1"}))
    assert listing == ["A1", "C1", "B1", "12345", "C2", "A2"]  # never C3 (deleted), D1, E1 (product withdrawn)
    assert skus(predict(shop, {"recommendation_type": "CATEGORY_LIST", "category_id": 3})) == ["B1"]
    assert skus(predict(shop, {"recommendation_type": "CATEGORY_LIST", "category_id": 404})) == []


# --- unusable bodies ---------------------------------------------------------------------------------------------
BAD_BODIES = {
    "unknown type": ({"recommendation_type": "SEARCH"}, "recommendation_type"),
    "missing type": ({"session_id": "s1"}, "recommendation_type"),
    "negative limit": ({"recommendation_type": "HOMEPAGE", "limit": -1}, "limit"),
    "text limit": ({"recommendation_type": "HOMEPAGE", "limit": "ten"}, "limit"),
    "boolean limit": ({"recommendation_type": "HOMEPAGE", "limit": True}, "limit"),
    "category list without category": ({"recommendation_type": "CATEGORY_LIST", "limit": 5}, "category_id"),
    "category id not a number": ({"recommendation_type": "CATEGORY_LIST", "category_id": "shoes"}, "category_id"),
    "variants an object": ({"recommendation_type": "PRODUCT_DETAIL", "variants": {"a": 1}}, "variants"),
    "cart of objects": ({"recommendation_type": "CART", "variants_in_cart": [{"sku": "A1"}]}, "variants_in_cart"),
    "session a list": ({"recommendation_type": "HOMEPAGE", "session_id": ["s"]}, "session_id"),
    "user a boolean": ({"recommendation_type": "HOMEPAGE", "user_id": True}, "user_id"),
    "session id too long": ({"recommendation_type": "HOMEPAGE", "session_id": "s" * 101}, "session_id"),
    "an array": ([{"recommendation_type": "HOMEPAGE"}], ""),
    "a string": ("HOMEPAGE", ""),
    "a number": (3, ""),
}  # fmt: skip


def test_unusable_bodies_are_400_json_naming_the_field(client) -> None:  # type: ignore[no-untyped-def]
    for case, (body, field) in BAD_BODIES.items():
        response = predict(client, body)
        assert response.status_code == 400, case
        error = response.get_json()
        assert set(error) == {"error", "details"}, case
        assert field in error["error"], case
        if field:
            assert error["details"][0]["field"] == field, case
    for raw in (b"", b"{not json", b"\xff\xfe"):
        response = client.post("/predict", data=raw, content_type="application/json")
        assert response.status_code == 400, raw
        assert "error" in response.get_json()


# --- product positions ---------------------------------------------------------------------------------------------
def test_product_positions_cover_descendant_categories(shop) -> None:  # type: ignore[no-untyped-def]
    body = {"recommendation_type": "CATEGORY_LIST", "category_id": 1, "session_id": "", "user_id": None}
    response = predict(shop, body, "/predict/product_positions")
    assert response.status_code == 200
    positions = response.get_json()
    ProductPositionsResponse.model_validate(positions)
    # ranking A1 C1 B1 12345 C2 A2: product 10 (A1) 0, 30 (C1) 1, 20 (B1, in grandchild 3) 2, 60 (12345) 3
    assert positions == {"10": 0, "20": 2, "30": 1, "60": 3}
    sub = predict(shop, {"recommendation_type": "CATEGORY_LIST", "category_id": 2}, "/predict/product_positions")
    assert sub.get_json() == {"10": 0, "20": 1}
    unknown = predict(shop, {"category_id": 404, "session_id": "undefined"}, "/predict/product_positions")
    assert unknown.status_code == 200 and unknown.get_json() == {}


def test_product_positions_bad_bodies(shop) -> None:  # type: ignore[no-untyped-def]
    missing = predict(shop, {"recommendation_type": "CATEGORY_LIST"}, "/predict/product_positions")
    assert missing.status_code == 400 and "category_id" in missing.get_json()["error"]
    wrong = predict(shop, {"recommendation_type": "HOMEPAGE", "category_id": 1}, "/predict/product_positions")
    assert wrong.status_code == 400 and "recommendation_type" in wrong.get_json()["error"]


# --- runtime configuration ------------------------------------------------------------------------------------------
def save_config(app, database, config: PipelineConfig) -> None:  # type: ignore[no-untyped-def]
    with database.write_session() as session:
        app.container.config_store().save(session, config)


def model_name(client) -> str:  # type: ignore[no-untyped-def]
    response = predict(client, {"recommendation_type": "HOMEPAGE", "limit": 3})
    assert response.status_code == 200
    return response.get_json()[0]["rs_info"]["model_name"]


def test_a_disabled_model_stops_serving_after_a_refresh(shop, app, database) -> None:  # type: ignore[no-untyped-def]
    assert model_name(shop) == "popularity"
    save_config(app, database, PipelineConfig.model_validate({"modelsDisabled": {"popularity": True}}))
    assert app.container.model_manager().refresh() is True
    assert model_name(shop) == "selection"
    assert app.container.model_manager().refresh() is False  # nothing changed since: no rebuild


@pytest.fixture
def fast_refresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """Poll the revisions every 0.2 s (set before the container reads its settings)."""
    monkeypatch.setenv("RS_REFRESH_SECONDS", "0.2")


def test_the_background_thread_picks_up_a_new_config(fast_refresh, shop, app, database) -> None:  # type: ignore[no-untyped-def]
    assert app.container.model_manager().refresh_seconds == 0.2
    assert model_name(shop) == "popularity"
    # the dashboard's shape: modelsDisabled keyed by index into models
    models = [{"name": "selection"}, {"name": "popularity"}]
    save_config(app, database, PipelineConfig.model_validate({"models": models, "modelsDisabled": {"1": True}}))
    deadline = time.monotonic() + 15  # nobody calls refresh(): only the background thread can see it
    while model_name(shop) != "selection" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert model_name(shop) == "selection"


def test_catalogue_changes_through_ingest_are_served_after_refresh(shop, app) -> None:  # type: ignore[no-untyped-def]
    variant = {"_model_class": "ProductVariant", "ean": "", "recommendation_weight": 1.0, "attributes": []}
    objects = [
        {**variant, "sku": "Z1", "stock_quantity": 3},
        {"_model_class": "Product", "id": 90, "published": True, "type": None, "category_id": 3,
         "product_translations": [], "product_variants": ["Z1"]},
        {**variant, "sku": "A1", "stock_quantity": 0},
    ]  # fmt: skip
    stored = shop.post("/store_objects", data=json.dumps(objects), content_type="application/json")
    assert stored.status_code == 200, stored.get_json()
    app.container.model_manager().refresh()
    homepage = skus(predict(shop, {"recommendation_type": "HOMEPAGE"}))
    assert "Z1" in homepage and "A1" not in homepage  # A1 sold out
    listing = skus(predict(shop, {"recommendation_type": "CATEGORY_LIST", "category_id": 3}))
    assert listing == ["B1", "Z1"]


# --- log and sessions ------------------------------------------------------------------------------------------------
def test_every_answer_is_logged_and_flushed_on_shutdown(shop, app, database) -> None:  # type: ignore[no-untyped-def]
    bodies = list(BACKEND_BODIES.values())
    for body in bodies:
        assert predict(shop, body).status_code == 200
    positions = {"recommendation_type": "CATEGORY_LIST", "category_id": 1, "session_id": "s-log", "user_id": 42}
    assert predict(shop, positions, "/predict/product_positions").status_code == 200
    assert predict(shop, {"recommendation_type": "SEARCH"}).status_code == 400  # not an answer: not logged
    for hook in app.shutdown_hooks:
        hook()
    with database.session() as session:
        logged = session.scalar(select(func.count()).select_from(PredictionLog))
        linked = session.scalar(select(ShopSession.user_id).where(ShopSession.id == "s-log"))
        types = set(session.scalars(select(PredictionLog.recommendation_type)))
    assert logged == len(bodies) + 1
    assert linked == "42"
    assert types == {"HOMEPAGE", "PRODUCT_DETAIL", "CART", "CATEGORY_LIST"}


def test_background_threads_stop_with_their_app(container) -> None:  # type: ignore[no-untyped-def]
    import gc

    from recommender_system.app import create_app

    app = create_app(container)
    manager, writer = container.model_manager(), container.prediction_log_writer()
    assert manager.running and writer.running
    for hook in app.shutdown_hooks:  # a clean shutdown stops them
        hook()
    assert not manager.running and not writer.running
    manager.start()
    writer.start()
    dropped = create_app(container)  # an app dropped without a shutdown stops them when collected
    del dropped
    gc.collect()
    assert not manager.running and not writer.running
