"""study_plans: a study's pre-registered question, frozen with a hash when the study opens (issue 13)

Revision ID: 0008
Revises: 0006
Create Date: 2026-12-07 00:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'study_plans',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('study_id', sa.Integer(), nullable=False),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('spec', sa.JSON(), nullable=False),
        sa.Column('reason', sa.Text(), nullable=False),
        sa.Column('sha256', sa.String(length=64), nullable=True),
        sa.Column('previous_sha256', sa.String(length=64), nullable=True),
        sa.Column('votes_at_freeze', sa.Integer(), nullable=True),
        sa.Column('frozen_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['study_id'], ['studies.id'], name=op.f('fk_study_plans_study_id_studies'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_study_plans')),
        sa.UniqueConstraint('study_id', 'version', name=op.f('uq_study_plans_study_id_version')),
    )
    op.create_index(op.f('ix_study_plans_study_id'), 'study_plans', ['study_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_study_plans_study_id'), table_name='study_plans')
    op.drop_table('study_plans')
