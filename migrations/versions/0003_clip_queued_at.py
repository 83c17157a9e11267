"""clips.queued_at: when a clip last went into the queue, so the sweeper can resend a lost message

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 17:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: the sweeper reads a missing value as the clip's created_at.
    op.add_column('clips', sa.Column('queued_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column('clips', 'queued_at')
