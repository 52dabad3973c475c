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

# (table, name PostgreSQL gave it by default, name under the convention)
RENAMES = (
    ('batch', 'batch_pkey', 'pk_batch'),
    ('batch', 'batch_key_key', 'uq_batch_key'),
    ('model_version', 'model_version_pkey', 'pk_model_version'),
    ('job', 'job_pkey', 'pk_job'),
    ('job', 'job_batch_id_fkey', 'fk_job_batch_id_batch'),
    ('job', 'job_model_version_fkey', 'fk_job_model_version_model_version'),
)


def rename(old_index: int, new_index: int) -> None:
    bind = op.get_bind()
    if bind.dialect.name != 'postgresql':
        return
    present = set(bind.execute(sa.text(
        "SELECT conname FROM pg_constraint WHERE connamespace = current_schema()::regnamespace"
    )).scalars())
    for names in RENAMES:
        table, old, new = names[0], names[old_index], names[new_index]
        if old in present and new not in present:
            op.execute(f'ALTER TABLE "{table}" RENAME CONSTRAINT "{old}" TO "{new}"')


def upgrade() -> None:
    rename(1, 2)


def downgrade() -> None:
    pass  # the convention's names are valid names for the old schema too
