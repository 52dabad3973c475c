"""jobs may carry alternative references, other sentences that count as right beside the reference

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-08 10:00:00

A JSON list of sentences, or NULL. Rows from before this revision had none: their right_answer stays as it was
decided against the reference alone.

The column is added and dropped in place (ALTER TABLE, SQLite 3.35 or later), not by batch mode: SQLite's batch mode
copies and drops the table, and dropping `job` would cascade to its webhook deliveries.
"""

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('job', sa.Column('alt_references', sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column('job', 'alt_references')
