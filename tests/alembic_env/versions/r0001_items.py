"""Create items, and migration_runs where every revision logs that it ran.

Revision ID: r0001
Revises:
"""

from __future__ import annotations

import os

from alembic import op

revision = "r0001"
down_revision: str | None = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL)")
    op.execute(
        "CREATE TABLE migration_runs (revision text, pid integer, at timestamptz DEFAULT now())"
    )
    op.execute(f"INSERT INTO migration_runs (revision, pid) VALUES ('r0001', {os.getpid()})")


def downgrade() -> None:
    op.execute("DROP TABLE migration_runs")
    op.execute("DROP TABLE items")
