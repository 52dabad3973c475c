"""jobs record their knowledge bank (name and pinned version), threshold, confidence and evidence

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06 20:45:00

Rows from before this revision keep NULL in every new column: they name no bank and are decoded
against the bundle's own, as they were.
"""

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

COLUMNS = (
    ('bank', sa.String(length=64)),
    ('bank_version', sa.String(length=64)),
    ('min_confidence', sa.Float()),
    ('confidence', sa.Float()),
    ('evidence', sa.JSON(none_as_null=True)),
)


def upgrade() -> None:
    with op.batch_alter_table('job') as batch_op:
        for name, type_ in COLUMNS:
            batch_op.add_column(sa.Column(name, type_, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('job') as batch_op:
        for name, _ in reversed(COLUMNS):
            batch_op.drop_column(name)
