"""jobs keep their quality metrics as plain columns beside the metrics JSON

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 23:00:00

The dashboard sums and bins cube_cos, identity_cos, e2e_cos, decode_fidelity and echo over whole
batches; reading them from columns spares parsing every job's JSON on every first view. Existing rows
are filled from their JSON (a metric the JSON lacks stays NULL, as the repository writes it); the JSON
stays the record, so the downgrade only drops the columns.
"""

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

COLUMNS = ('cube_cos', 'identity_cos', 'e2e_cos', 'decode_fidelity', 'echo')

# One parse of each row's JSON on PostgreSQL; rows whose metrics are SQL NULL or JSON null are left alone.
POSTGRES_BACKFILL = """
UPDATE job SET (cube_cos, identity_cos, e2e_cos, decode_fidelity, echo) = (
    SELECT m.cube_cos, m.identity_cos, m.e2e_cos, m.decode_fidelity, m.echo
    FROM json_to_record(job.metrics) AS m(cube_cos float8, identity_cos float8, e2e_cos float8, decode_fidelity float8, echo float8)
)
WHERE json_typeof(job.metrics) = 'object'
"""
SQLITE_BACKFILL = """
UPDATE job SET cube_cos = json_extract(metrics, '$.cube_cos'), identity_cos = json_extract(metrics, '$.identity_cos'),
    e2e_cos = json_extract(metrics, '$.e2e_cos'), decode_fidelity = json_extract(metrics, '$.decode_fidelity'),
    echo = json_extract(metrics, '$.echo')
WHERE json_type(metrics) = 'object'
"""


def upgrade() -> None:
    with op.batch_alter_table('job') as batch_op:
        for name in COLUMNS:
            batch_op.add_column(sa.Column(name, sa.Float(), nullable=True))
    op.execute(POSTGRES_BACKFILL if op.get_bind().dialect.name == 'postgresql' else SQLITE_BACKFILL)


def downgrade() -> None:
    with op.batch_alter_table('job') as batch_op:
        for name in reversed(COLUMNS):
            batch_op.drop_column(name)
