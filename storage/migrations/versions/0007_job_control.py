"""cancel, pause and retry: the batch's cancelled count and its paused and cancelled times, the job's attempt base

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 23:00:00

A job's status may now also be 'paused' (held by its paused batch) or 'cancelled' (a final state beside done
and failed); the status column is a plain string, so only the new columns change. Rows before this revision
were never cancelled, paused or retried: 0, NULL and 0.
"""

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('batch') as batch_op:
        batch_op.add_column(sa.Column('cancelled_count', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('paused_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('cancelled_at', sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table('job') as batch_op:
        batch_op.add_column(sa.Column('attempt_base', sa.Integer(), server_default='0', nullable=False))


def downgrade() -> None:
    # Plain ALTER TABLE ... DROP COLUMN (SQLite 3.35+), not batch mode: on SQLite batch mode copies and drops the
    # batch table, and with foreign keys on, dropping it deletes every job through ON DELETE CASCADE.
    op.drop_column('job', 'attempt_base')
    for name in ('cancelled_at', 'paused_at', 'cancelled_count'):
        op.drop_column('batch', name)
