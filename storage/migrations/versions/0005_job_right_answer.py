"""jobs keep whether their answer is the reference sentence, as a right_answer column

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 17:45:00

Every batch summary counts right answers (storage.quality); the repository decides it when a result is
stored: 1 or 0 for an answered job with a reference, NULL otherwise. Existing done rows are decided here by
the same function (normalised text needs Python: SQLite has no regular expressions), and their metrics JSON
gains the same value, as a newly stored result's does.
"""

import json

import sqlalchemy as sa
from alembic import op

from storage.quality import right_answer

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

JOB = sa.table(
    'job', sa.column('id', sa.String), sa.column('status', sa.String), sa.column('answer', sa.Text),
    sa.column('reference', sa.Text), sa.column('decoder_path', sa.String), sa.column('metrics', sa.JSON),
    sa.column('right_answer', sa.Float),
)
PAGE = 5000


def upgrade() -> None:
    with op.batch_alter_table('job') as batch_op:
        batch_op.add_column(sa.Column('right_answer', sa.Float(), nullable=True))
    bind = op.get_bind()
    candidates = sa.select(JOB.c.id, JOB.c.answer, JOB.c.reference, JOB.c.decoder_path, JOB.c.metrics).where(
        JOB.c.status == 'done', JOB.c.reference.is_not(None), JOB.c.answer.is_not(None),
    ).order_by(JOB.c.id)
    update = sa.update(JOB).where(JOB.c.id == sa.bindparam('job_id')).values(
        right_answer=sa.bindparam('new_right'), metrics=sa.bindparam('new_metrics', type_=sa.JSON),
    )
    last = ''
    while rows := bind.execute(candidates.where(JOB.c.id > last).limit(PAGE)).all():
        params = []
        for job_id, answer, reference, path, metrics in rows:
            right = right_answer(answer=answer, reference=reference, decoder_path=path)
            if right is not None:
                metrics = json.loads(metrics) if isinstance(metrics, str) else dict(metrics or {})
                params.append({'job_id': job_id, 'new_right': right, 'new_metrics': {**metrics, 'right_answer': right}})
        if params:
            bind.execute(update, params)
        last = rows[-1][0]


def downgrade() -> None:
    with op.batch_alter_table('job') as batch_op:
        batch_op.drop_column('right_answer')
