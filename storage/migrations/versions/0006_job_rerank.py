"""jobs keep whether the rerank stage reorders their candidates, as a rerank column

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 19:40:00

The choice is made when the job is submitted and travels with every (re-)send: the reconciler rebuilds the
same chain (encode | cube | decode | rerank, or without rerank). Rows before this revision were never
reranked: NULL reads as no.
"""

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('job') as batch_op:
        batch_op.add_column(sa.Column('rerank', sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('job') as batch_op:
        batch_op.drop_column('rerank')
