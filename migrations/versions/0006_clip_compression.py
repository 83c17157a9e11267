"""clips.master_name, fit_level, lossy_level, psnr_db: one lossy GIF level per pair, recorded per clip

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 23:50:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # All nullable: clips imported, or generated before this revision, have no master and no recorded level
    # (older generated clips keep theirs in generation["gif_lossy_level"], which the results page still reads).
    with op.batch_alter_table('clips') as batch:
        batch.add_column(sa.Column('master_name', sa.String(length=100), nullable=True))
        batch.add_column(sa.Column('fit_level', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('lossy_level', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('psnr_db', sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('clips') as batch:
        batch.drop_column('psnr_db')
        batch.drop_column('lossy_level')
        batch.drop_column('fit_level')
        batch.drop_column('master_name')
