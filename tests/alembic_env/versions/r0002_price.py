"""Add items.price (sleeps SMDTEST_MIGRATION_SLEEP seconds: a slow migration).

Revision ID: r0002
Revises: r0001
"""

from __future__ import annotations

import os
import time

from alembic import op

revision = "r0002"
down_revision = "r0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE items ADD COLUMN price numeric NOT NULL DEFAULT 0")
    time.sleep(float(os.environ.get("SMDTEST_MIGRATION_SLEEP", "0")))
    op.execute(f"INSERT INTO migration_runs (revision, pid) VALUES ('r0002', {os.getpid()})")


def downgrade() -> None:
    op.execute("ALTER TABLE items DROP COLUMN price")
