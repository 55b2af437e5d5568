"""prediction_log_item without its foreign key to prediction_log

PostgreSQL checked the key once per inserted item with a plan cached while the log was empty: a sequential scan of
the log that grew with it and came to cost more database CPU than the predictions themselves. The one writer puts
a prediction's items in the same transaction as its log row, so the key guarded nothing the writer does not.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FOREIGN_KEY = "fk_prediction_log_item_prediction_id_prediction_log"


def upgrade() -> None:
    with op.batch_alter_table("prediction_log_item", schema=None) as batch_op:
        batch_op.drop_constraint(FOREIGN_KEY, type_="foreignkey")


def downgrade() -> None:
    with op.batch_alter_table("prediction_log_item", schema=None) as batch_op:
        batch_op.create_foreign_key(FOREIGN_KEY, "prediction_log", ["prediction_id"], ["id"], ondelete="CASCADE")
