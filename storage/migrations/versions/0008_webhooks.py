"""batches and jobs may carry a callback URL; webhook_delivery records each POST of a final summary to it

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 22:45:00

Rows from before this revision carry no callback URL: nothing is posted for them.

The columns are added and dropped in place (ALTER TABLE, SQLite 3.35 or later), not by batch mode: SQLite's batch mode
copies and drops the table, and dropping `batch` would cascade to every job.
"""

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ('batch', 'job'):
        op.add_column(table, sa.Column('callback_url', sa.String(length=2000), nullable=True))
    op.create_table(
        'webhook_delivery',
        sa.Column('id', sa.String(length=32), nullable=False),
        sa.Column('batch_id', sa.String(length=32), nullable=False),
        sa.Column('job_id', sa.String(length=32), nullable=True),
        sa.Column('url', sa.String(length=2000), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('last_status_code', sa.Integer(), nullable=True),
        sa.Column('last_error', sa.Text(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('leased_until', sa.DateTime(timezone=True), nullable=True),
        sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['batch_id'], ['batch.id'], name=op.f('fk_webhook_delivery_batch_id_batch'), ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['job_id'], ['job.id'], name=op.f('fk_webhook_delivery_job_id_job'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_delivery')),
    )
    op.create_index(op.f('ix_webhook_delivery_batch_id'), 'webhook_delivery', ['batch_id'])
    op.create_index('ix_webhook_delivery_status_next', 'webhook_delivery', ['status', 'next_attempt_at'])


def downgrade() -> None:
    op.drop_index('ix_webhook_delivery_status_next', table_name='webhook_delivery')
    op.drop_index(op.f('ix_webhook_delivery_batch_id'), table_name='webhook_delivery')
    op.drop_table('webhook_delivery')
    for table in ('job', 'batch'):
        op.drop_column(table, 'callback_url')
