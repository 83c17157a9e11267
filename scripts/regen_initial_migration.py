"""Regenerate migrations/versions/0001 from app/models.py.

Only while nothing is deployed: once a database exists in the wild, add a new revision instead
(`alembic revision --autogenerate`), never rewrite 0001.
"""

import tempfile
from pathlib import Path

from alembic import command

from app.migrate import ROOT, alembic_config

for old in (ROOT / "migrations" / "versions").glob("0001_*.py"):
    old.unlink()
with tempfile.TemporaryDirectory() as tmp:
    url = f"sqlite:///{Path(tmp) / 'empty.sqlite'}"
    command.revision(alembic_config(url), message="initial schema", autogenerate=True, rev_id="0001")
print("regenerated migrations/versions/0001_initial_schema.py")
