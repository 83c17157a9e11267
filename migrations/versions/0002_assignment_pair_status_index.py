"""index assignments (pair_id, status) for choosing the least-loaded pair

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 14:20:00
"""

from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_assignments_pair_id_status', 'assignments', ['pair_id', 'status'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_assignments_pair_id_status', table_name='assignments')
