"""The SQL dump reader of the demo loader and the mapping of dump rows to ingest objects (no database)."""

from __future__ import annotations

import pytest

from recommender_system.demo.loader import _category_objects, _fix_text, demo_objects, tables_of
from recommender_system.demo.sql import SqlSyntaxError, parse_array_literal, parse_inserts, tokenize


def test_values_of_every_kind() -> None:
    text = """
    -- a comment
    INSERT INTO public."order" ("token",n,f,e,b,nothing,arr,lit) VALUES
        ('it''s; (not) the end',-3,2.50,1e3,true,NULL,ARRAY['a','b'],'{x,"y,z",NULL}'::text[]),
        ('',0,.5,-1.5E-2,FALSE,null,ARRAY[],'{}'::varchar(10)[]);
    """
    (statement,) = parse_inserts(text)
    assert statement.table == "order"
    assert statement.columns == ["token", "n", "f", "e", "b", "nothing", "arr", "lit"]
    assert statement.rows == [
        ("it's; (not) the end", -3, 2.5, 1000.0, True, None, ["a", "b"], ["x", "y,z", None]),
        ("", 0, 0.5, -0.015, False, None, [], []),
    ]
    assert isinstance(statement.rows[0][1], int) and isinstance(statement.rows[0][2], float)


def test_other_statements_are_skipped_and_stray_rows_reported() -> None:
    text = """SET client_encoding = 'UTF8';
    SELECT pg_catalog.setval('public.x_id_seq', 3, true);
    INSERT INTO a (x, y) VALUES (1, 'a'), (2, 'b');
    \t (3, 'c');
    INSERT INTO b (z) VALUES ('{}');"""
    statements = parse_inserts(text)
    assert [(s.table, s.rows, s.stray) for s in statements] == [
        ("a", [(1, "a"), (2, "b")], False),
        ("a", [(3, "c")], True),
        ("b", [("{}",)], False),
    ]
    assert tables_of(statements)["a"] == [{"x": 1, "y": "a"}, {"x": 2, "y": "b"}, {"x": 3, "y": "c"}]


@pytest.mark.parametrize(
    "text",
    [
        "INSERT INTO a (x, y) VALUES (1);",  # too few values
        "INSERT INTO a (x) VALUES (now());",  # a function call is not a literal
        "INSERT INTO a (x) VALUES ('unterminated);",
        "INSERT INTO a (x) VALUES (1) (2);",
    ],
)
def test_malformed_dumps_raise(text: str) -> None:
    with pytest.raises(SqlSyntaxError):
        parse_inserts(text)


def test_tokens_carry_offsets() -> None:
    assert list(tokenize("x 'a'")) == [("word", "x", 0), ("string", "a", 2)]


def test_array_literals() -> None:
    assert parse_array_literal("{1-cs-720p,2-en-1080p}") == ["1-cs-720p", "2-en-1080p"]
    assert parse_array_literal('{"a \\"quoted\\" b", NULL ,c}') == ['a "quoted" b', None, "c"]
    assert parse_array_literal("{}") == []
    with pytest.raises(SqlSyntaxError):
        parse_array_literal("1,2")


def test_generator_artefact_in_a_value_is_fixed() -> None:
    assert _fix_text("(no genres listed,false)") == "(no genres listed)"
    assert _fix_text("Drama") == "Drama" and _fix_text(None) is None


def test_categories_from_ancestor_pairs_with_missing_self_rows() -> None:
    pairs = [(3, 2), (4, 2), (5, 2), (2, 2), (6, 5), (6, 2)]
    objects = _category_objects([{"category_id": c, "category_ancestor_id": a} for c, a in pairs])
    assert {o["id"]: o["parent_id"] for o in objects} == {2: None, 3: 2, 4: 2, 5: 2, 6: 5}
    assert objects[0]["id"] == 2  # parents come first


def _row(**values):  # type: ignore[no-untyped-def]
    return {"deleted": False, **values}


def test_demo_mapping_deduplicates_and_attaches_orphan_variants() -> None:
    ts = "2023-07-09 17:38:11"
    products = {
        "attribute_type": [_row(type_name="GENRE", unit=None, type="CATEGORICAL")] * 2,
        "attribute": [_row(raw_value="Drama", order=None, attribute_type_id=1),
                      _row(raw_value="Drama", order=None, attribute_type_id=2)],
        "product_type": [_row(name="Movie", create_at=ts, update_at=ts)] * 2,
        "attribute_type_product_type": [_row(attribute_type_id=2, product_type_id=2)],
        "category_ancestor": [_row(category_id=3, category_ancestor_id=2)],
        "attribute_product_variant": [_row(attribute_id=2, product_variant_sku="7-en-720p")],
        "product_variant": [
            _row(sku=s, ean="", weight=1.0, stock_quantity=1, recommendation_weight=1.0, create_at=c, update_at=c)
            for s, c in (("7-en-720p", "2023-01-02 00:00:00"), ("7-cs-720p", "2023-01-01 00:00:00"))
        ],
        "product": [_row(published=True, category_id=3, product_type_id=None, create_at=ts, update_at=ts)],
        "product_product_variant": [_row(product_id=7, product_variant_sku="7-en-720p")],
        "product_price": [_row(price_list_code="EUR", price=2.5, product_variant_sku="7-en-720p",
                               create_at=ts, update_at=ts)] * 2,
        "order": [_row(token="95029f63-2a51-48b3-9028-ca77b76051d4", session_id="1", create_at=ts, update_at=ts)],
        "order_product_variant": [_row(quantity=2, order_token="95029f63-2a51-48b3-9028-ca77b76051d4",
                                       product_variant_sku="7-en-720p")],
    }  # fmt: skip
    feedback = {
        "session": [{"id": "1", "user_id": 1}],
        "product_detail_enter": [],
        "review": [_row(user_id=1, product_id=7, product_variant_sku="7-en-720p", rating=4, create_at=ts,
                        update_at=ts, session_id="1")] * 2,
    }  # fmt: skip
    objects = demo_objects(products, feedback)
    by_class: dict[str, list] = {}  # type: ignore[type-arg]
    for obj in objects:
        by_class.setdefault(obj["_model_class"], []).append(obj)
    assert {k: len(v) for k, v in by_class.items()} == {
        "AttributeType": 1, "Attribute": 1, "ProductType": 1, "Category": 2, "ProductVariant": 2, "Product": 1,
        "ProductPrice": 1, "Order": 1, "Review": 1,
    }  # fmt: skip
    assert by_class["ProductType"][0]["attribute_types"] == [1]  # type 2 was a copy of type 1
    assert by_class["ProductVariant"][0]["attributes"] == [1]  # attribute 2 was a copy of attribute 1
    product = by_class["Product"][0]
    assert product["product_variants"] == ["7-en-720p", "7-cs-720p"]  # the orphan joins its movie
    assert (product["category_id"], product["create_at"], product["update_at"]) == (
        3, "2023-01-01 00:00:00", "2023-01-02 00:00:00"
    )  # fmt: skip
    assert by_class["Order"][0]["product_variants"] == [["7-en-720p", 2]]
    assert by_class["Order"][0]["user_id"] == 1
