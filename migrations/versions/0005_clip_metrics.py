"""clip_metrics: automatic per-clip video metrics (motion, flicker, warping error, sharpness, BRISQUE, CLIP)

One row per clip, metric and metric version, with the sha256 of the file it was measured on.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 21:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'clip_metrics',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('clip_id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=60), nullable=False),
        sa.Column('version', sa.String(length=60), nullable=False),
        sa.Column('value', sa.Float(), nullable=False),
        sa.Column('per_frame', sa.JSON(), nullable=True),
        sa.Column('sha256', sa.String(length=64), nullable=True),
        sa.Column('computed_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['clip_id'], ['clips.id'], name=op.f('fk_clip_metrics_clip_id_clips'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_clip_metrics')),
        sa.UniqueConstraint('clip_id', 'name', 'version', name=op.f('uq_clip_metrics_clip_id_name_version')),
    )


def downgrade() -> None:
    op.drop_table('clip_metrics')
