"""Optional answers per study: a "both are bad" choice, reason tags and a comment per pair

studies.answer_options holds the study's choice (null: none of them, as before); votes.comment and
votes.reason_tags hold what an evaluator gave with a vote (null when the study asks for neither).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 00:10:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('studies') as batch:
        batch.add_column(sa.Column('answer_options', sa.JSON(), nullable=True))
    with op.batch_alter_table('votes') as batch:
        batch.add_column(sa.Column('comment', sa.Text(), nullable=True))
        batch.add_column(sa.Column('reason_tags', sa.JSON(), nullable=True))
    with op.batch_alter_table('vote_choices') as batch:
        batch.drop_constraint(op.f('ck_vote_choices_side'), type_='check')
        batch.create_check_constraint('side', "side IN ('left', 'right', 'tie', 'both_bad')")


def downgrade() -> None:
    op.execute("UPDATE vote_choices SET side = 'tie' WHERE side = 'both_bad'")
    with op.batch_alter_table('vote_choices') as batch:
        batch.drop_constraint(op.f('ck_vote_choices_side'), type_='check')
        batch.create_check_constraint('side', "side IN ('left', 'right', 'tie')")
    with op.batch_alter_table('votes') as batch:
        batch.drop_column('reason_tags')
        batch.drop_column('comment')
    with op.batch_alter_table('studies') as batch:
        batch.drop_column('answer_options')
