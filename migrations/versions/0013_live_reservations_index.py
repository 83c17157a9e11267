"""assignments: (pair_id, status, shown_at) replaces (pair_id, status), so choosing a pair counts its live
reservations from the index alone

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 13:40:00
"""

from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_assignments_pair_id_status_shown_at', 'assignments', ['pair_id', 'status', 'shown_at'])
    op.drop_index('ix_assignments_pair_id_status', table_name='assignments')


def downgrade() -> None:
    op.create_index('ix_assignments_pair_id_status', 'assignments', ['pair_id', 'status'])
    op.drop_index('ix_assignments_pair_id_status_shown_at', table_name='assignments')
