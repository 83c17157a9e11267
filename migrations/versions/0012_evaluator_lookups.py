"""evaluators: indexes for the QC triggers every vote evaluates (sessions sharing an address, completed sessions)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 05:40:00
"""

from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_evaluators_study_id_ip_hash', 'evaluators', ['study_id', 'ip_hash'])
    op.create_index('ix_evaluators_study_id_completed_at', 'evaluators', ['study_id', 'completed_at'])


def downgrade() -> None:
    op.drop_index('ix_evaluators_study_id_completed_at', table_name='evaluators')
    op.drop_index('ix_evaluators_study_id_ip_hash', table_name='evaluators')
