"""rejudging_debts: the study-wide QC re-judgings a vote triggered and that have not run, kept in the database so
that every web process settles them and none is lost with the process that owed it

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 18:20:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'rejudging_debts',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('study_id', sa.Integer(), nullable=False),
        sa.Column('rule', sa.String(length=20), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['study_id'], ['studies.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_rejudging_debts_study_id_rule', 'rejudging_debts', ['study_id', 'rule'])


def downgrade() -> None:
    op.drop_index('ix_rejudging_debts_study_id_rule', table_name='rejudging_debts')
    op.drop_table('rejudging_debts')
