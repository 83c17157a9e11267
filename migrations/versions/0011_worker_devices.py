"""worker_devices: the GPU (and its memory) each generation worker last reported

The study page warns before generation when a model's stated peak memory fits none of the connected workers' GPUs.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 23:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'worker_devices',
        sa.Column('worker', sa.String(length=200), nullable=False),
        sa.Column('device', sa.String(length=200), nullable=False),
        sa.Column('total_memory_bytes', sa.BigInteger(), nullable=True),
        sa.Column('seen_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('worker', name=op.f('pk_worker_devices')),
    )


def downgrade() -> None:
    op.drop_table('worker_devices')
