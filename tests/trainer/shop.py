"""Writing a small shop straight into the tables (independent of the ingest API) for the trainer's tests."""

from __future__ import annotations

from datetime import datetime, timedelta

from recommender_system.storage.database import Database
from recommender_system.storage.tables import (
    Attribute,
    AttributeType,
    OrderLine,
    Product,
    ProductAddToCart,
    ProductDetailEnter,
    ProductPrice,
    ProductProductVariant,
    ProductVariant,
    Review,
    ShopOrder,
    ShopSession,
    VariantAttribute,
)

START = datetime(2024, 1, 1, 12, 0, 0)


def add_variants(database: Database, n: int, start: int = 0, updated_at: datetime = START) -> list[str]:
    """Variants ``sku0..`` each in its own published product, in stock, with a CZK price and a colour."""
    skus = [f"sku{i}" for i in range(start, start + n)]
    with database.write_session() as session:
        if session.get(AttributeType, 1) is None:
            session.add(AttributeType(id=1, type="CATEGORICAL", type_name="colour", updated_at=updated_at))
            session.add(Attribute(id=1, attribute_type_id=1, raw_value="red", updated_at=updated_at))
            session.add(Attribute(id=2, attribute_type_id=1, raw_value="blue", updated_at=updated_at))
        for i, sku in zip(range(start, start + n), skus, strict=True):
            session.add(ProductVariant(sku=sku, stock_quantity=5, updated_at=updated_at, created_at=updated_at))
            session.add(Product(id=i + 1, published=True, category_id=None, updated_at=updated_at))
            session.add(ProductProductVariant(product_id=i + 1, product_variant_sku=sku))
            session.add(
                ProductPrice(
                    id=i + 1, price_list_code="CZK", product_variant_sku=sku, price=100.0 + i, updated_at=updated_at
                )
            )
            session.add(VariantAttribute(product_variant_sku=sku, attribute_id=1 + i % 2))
    return skus


def add_views(
    database: Database, session_id: str, skus: list[str], at: datetime = START, user: str | None = None
) -> None:
    with database.write_session() as session:
        if session.get(ShopSession, session_id) is None:
            session.add(ShopSession(id=session_id, user_id=user, created_at=at))
        for offset, sku in enumerate(skus):
            session.add(
                ProductDetailEnter(
                    session_id=session_id, product_variant_sku=sku, created_at=at + timedelta(seconds=offset)
                )
            )


def add_cart(database: Database, session_id: str, sku: str, at: datetime) -> None:
    with database.write_session() as session:
        session.add(ProductAddToCart(session_id=session_id, product_variant_sku=sku, created_at=at))


def add_order(
    database: Database,
    token: str,
    session_id: str | None,
    lines: list[tuple[str, int]],
    at: datetime,
    user: str | None = None,
) -> None:
    with database.write_session() as session:
        session.add(ShopOrder(token=token, session_id=session_id, user_id=user, created_at=at))
        session.flush()
        for number, (sku, quantity) in enumerate(lines):
            session.add(OrderLine(order_token=token, line_number=number, product_variant_sku=sku, quantity=quantity))


def add_review(database: Database, review_id: int, session_id: str, sku: str, rating: int, at: datetime) -> None:
    with database.write_session() as session:
        session.add(Review(id=review_id, session_id=session_id, product_variant_sku=sku, rating=rating, created_at=at))


def add_shoppers(
    database: Database, n_sessions: int, skus: list[str], per_session: int = 4, at: datetime = START
) -> int:
    """``n_sessions`` anonymous sessions viewing ``per_session`` consecutive SKUs each; returns the view count."""
    for s in range(n_sessions):
        viewed = [skus[(s + k) % len(skus)] for k in range(per_session)]
        add_views(database, f"session{s}", viewed, at + timedelta(minutes=s))
    return n_sessions * per_session
