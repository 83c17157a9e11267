"""clips.storage: which store holds a clip's file (local folder or S3 bucket), so a study can move between them

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 23:50:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Every clip stored before this lived in the local media folder.
    op.add_column('clips', sa.Column('storage', sa.String(length=8), nullable=False, server_default='local'))


def downgrade() -> None:
    with op.batch_alter_table('clips') as batch:
        batch.drop_column('storage')
