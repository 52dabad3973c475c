"""constraint names follow the naming convention of storage.models

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06 19:50:00

Databases created before the convention carry the backend's default names (PostgreSQL: batch_pkey,
batch_key_key, job_batch_id_fkey, ...); a database created after it carries the convention's
(pk_batch, uq_batch_key, fk_job_batch_id_batch, ...). This renames the old ones so that every
PostgreSQL store has the same names. SQLite cannot rename a constraint and never looks names up;
a later batch-mode migration rebuilds its tables with the convention's names anyway.
"""

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

# name PostgreSQL gave a constraint by default -> the statement giving it the convention's name
RENAMES = {
    'batch_pkey': 'ALTER TABLE batch RENAME CONSTRAINT batch_pkey TO pk_batch',
    'batch_key_key': 'ALTER TABLE batch RENAME CONSTRAINT batch_key_key TO uq_batch_key',
    'model_version_pkey': 'ALTER TABLE model_version RENAME CONSTRAINT model_version_pkey TO pk_model_version',
    'job_pkey': 'ALTER TABLE job RENAME CONSTRAINT job_pkey TO pk_job',
    'job_batch_id_fkey': 'ALTER TABLE job RENAME CONSTRAINT job_batch_id_fkey TO fk_job_batch_id_batch',
    'job_model_version_fkey': 'ALTER TABLE job RENAME CONSTRAINT job_model_version_fkey TO fk_job_model_version_model_version',
}


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != 'postgresql':
        return
    present = set(bind.execute(sa.text(
        "SELECT conname FROM pg_constraint WHERE connamespace = current_schema()::regnamespace"
    )).scalars())
    for old, statement in RENAMES.items():
        if old in present:
            op.execute(statement)


def downgrade() -> None:
    pass  # the convention's names are valid names for the 0001 schema too
