"""server-side login sessions, study collaborators, evaluators.platform_session_id

user_sessions: a login is a row, so logout and a password change end it (a copied cookie stops working).
study_collaborators: who, besides the owner (studies.created_by_id) and admins, may see and run a study.
evaluators.platform_session_id: the crowd platform's own session id (e.g. Prolific's SESSION_ID), which a
returning participant must repeat to resume their session.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 10:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'user_sessions',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('token_hash', sa.String(length=64), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_user_sessions_user_id_users'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_user_sessions')),
        sa.UniqueConstraint('token_hash', name=op.f('uq_user_sessions_token_hash')),
    )
    op.create_index(op.f('ix_user_sessions_user_id'), 'user_sessions', ['user_id'], unique=False)
    op.create_table(
        'study_collaborators',
        sa.Column('study_id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['study_id'], ['studies.id'], name=op.f('fk_study_collaborators_study_id_studies'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_study_collaborators_user_id_users'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('study_id', 'user_id', name=op.f('pk_study_collaborators')),
    )
    op.create_index(op.f('ix_study_collaborators_user_id'), 'study_collaborators', ['user_id'], unique=False)
    # Batch mode: SQLite rebuilds the table; on PostgreSQL this is a plain ALTER TABLE ... ADD COLUMN.
    with op.batch_alter_table('evaluators') as batch:
        batch.add_column(sa.Column('platform_session_id', sa.String(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('evaluators') as batch:
        batch.drop_column('platform_session_id')
    op.drop_index(op.f('ix_study_collaborators_user_id'), table_name='study_collaborators')
    op.drop_table('study_collaborators')
    op.drop_index(op.f('ix_user_sessions_user_id'), table_name='user_sessions')
    op.drop_table('user_sessions')
