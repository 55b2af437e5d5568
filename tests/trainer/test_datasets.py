"""The training frames read from the database and the data snapshot."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import update

from recommender_system.storage.database import Database
from recommender_system.storage.tables import Product, ProductPrice, ProductVariant, ShopSession
from tests.trainer.shop import START, add_cart, add_order, add_review, add_variants, add_views
from trainer.datasets import (
    EVENT_COLUMNS,
    catalog_changes_since,
    data_snapshot,
    load_attributes,
    load_events,
    load_training_data,
    load_variants,
    representative_prices,
)


def test_events_frame_weights_user_keys_and_order(database: Database) -> None:
    add_variants(database, 4)
    add_views(database, "anon", ["sku0", "sku1"], START)
    add_views(database, "linked", ["sku2"], START + timedelta(seconds=5), user="u7")
    add_cart(database, "anon", "sku1", START + timedelta(seconds=1))  # same second as the second view
    add_order(database, "t1", "anon", [("sku1", 3), ("sku3", 1)], START + timedelta(minutes=1))
    add_order(database, "t2", None, [("sku0", 2)], START + timedelta(minutes=2))
    add_review(database, 77, "linked", "sku2", 4, START + timedelta(minutes=3))
    with database.session() as session:
        events = load_events(session)
    assert list(events.columns) == EVENT_COLUMNS
    rows = list(events[["user_key", "session_id", "sku", "event", "weight"]].itertuples(index=False, name=None))
    assert rows == [
        ("s:anon", "anon", "sku0", "view", 1.0),
        ("s:anon", "anon", "sku1", "view", 1.0),
        ("s:anon", "anon", "sku1", "cart", 1.0),
        ("u7", "linked", "sku2", "view", 1.0),
        ("s:anon", "anon", "sku1", "order", 3.0),
        ("s:anon", "anon", "sku3", "order", 1.0),
        ("o:t2", "o:t2", "sku0", "order", 2.0),
        ("u7", "linked", "sku2", "review", 4.0),
    ]
    assert events["timestamp"].is_monotonic_increasing
    assert pd.api.types.is_datetime64_any_dtype(events["timestamp"])

    # linking the anonymous session to a user later moves its whole history to that user
    with database.write_session() as session:
        session.execute(update(ShopSession).where(ShopSession.id == "anon").values(user_id="u9"))
    with database.session() as session:
        assert set(load_events(session)["user_key"]) == {"u9", "u7", "o:t2"}


def test_empty_database_gives_empty_frames_with_the_documented_columns(database: Database) -> None:
    with database.session() as session:
        data = load_training_data(session, {"ease_config": {"l2_options": [10.0]}}, seed=3)
    assert data.events.empty and list(data.events.columns) == EVENT_COLUMNS
    assert data.variants.empty and list(data.variants.columns) == ["sku", "product_id", "price", "stock", "eligible"]
    assert data.attributes.empty
    assert data.hyperparameters == {"ease_config": {"l2_options": [10.0]}} and data.seed == 3


def test_variants_frame_eligibility_and_attributes(database: Database) -> None:
    add_variants(database, 3)
    with database.write_session() as session:
        session.execute(update(ProductVariant).where(ProductVariant.sku == "sku1").values(deleted=True))
        session.execute(update(Product).where(Product.id == 3).values(published=False))
    with database.session() as session:
        variants = load_variants(session).set_index("sku")
        attributes = load_attributes(session)
    assert variants.loc["sku0", "eligible"] and not variants.loc["sku1", "eligible"]
    assert not variants.loc["sku2", "eligible"], "a variant whose only product is unpublished is not eligible"
    assert variants.loc["sku2", "product_id"] == 3 and variants.loc["sku0", "stock"] == 5
    assert variants.loc["sku2", "price"] == 102.0
    assert attributes["sku"].tolist() == ["sku0", "sku1", "sku2"]
    assert attributes["attribute_type_id"].tolist() == [1, 1, 1]
    assert attributes["raw_value"].tolist() == ["red", "blue", "red"]
    assert attributes["type"].tolist() == ["CATEGORICAL"] * 3 and attributes["numeric_value"].isna().all()


def test_representative_price_uses_the_primary_list_and_converts_the_others() -> None:
    prices = pd.DataFrame(
        [
            # CZK prices 3 SKUs (the primary list); EUR prices 2, one of them only in EUR
            ("a", "CZK", 250.0, 1),
            ("b", "CZK", 500.0, 1),
            ("c", "CZK", 750.0, 1),
            ("a", "EUR", 10.0, 1),
            ("b", "EUR", 20.0, 1),
            ("d", "EUR", 4.0, 1),
            ("c", "CZK", 999.0, 0),  # an older duplicate of (c, CZK): the newest row wins
            ("e", "PLN", 7.0, 1),  # a list sharing no SKU with CZK cannot be converted
        ],
        columns=["sku", "price_list_code", "price", "updated_at"],
    )
    result = representative_prices(prices)
    assert result["a"] == 250.0 and result["b"] == 500.0 and result["c"] == 750.0
    assert result["d"] == pytest.approx(100.0), "4 EUR at the median CZK/EUR ratio of 25"
    assert np.isnan(result["e"])
    assert representative_prices(prices.iloc[:0]).empty


def test_data_snapshot_and_catalogue_changes(database: Database) -> None:
    add_variants(database, 4)
    add_views(database, "s1", ["sku0", "sku1", "sku2"])
    add_review(database, 1, "s1", "sku0", 5, START)
    add_order(database, "t1", "s1", [("sku1", 2), ("sku2", 1)], START)
    with database.session() as session:
        snapshot = data_snapshot(session)
        assert catalog_changes_since(session, snapshot["catalog_updated_at"]) == 0
    assert snapshot["events"] == {"view": 3, "cart": 0, "order": 2, "review": 1}
    assert snapshot["n_events"] == 6 and snapshot["n_variants"] == 4
    assert snapshot["catalog_updated_at"] == START.isoformat()
    with database.write_session() as session:
        later = START + timedelta(days=1)
        session.execute(update(ProductPrice).where(ProductPrice.id == 1).values(updated_at=later))
        session.execute(update(ProductVariant).where(ProductVariant.sku == "sku3").values(updated_at=later))
    with database.session() as session:
        assert catalog_changes_since(session, snapshot["catalog_updated_at"]) == 2
