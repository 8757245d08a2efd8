"""Index items by name.

Revision ID: r0003
Revises: r0002
"""

from __future__ import annotations

import os

from alembic import op

revision = "r0003"
down_revision = "r0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX items_by_name ON items (name)")
    op.execute(f"INSERT INTO migration_runs (revision, pid) VALUES ('r0003', {os.getpid()})")


def downgrade() -> None:
    op.execute("DROP INDEX items_by_name")
