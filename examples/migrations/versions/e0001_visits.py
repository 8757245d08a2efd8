"""Create visits, the table the example's /visits route counts in.

Revision ID: e0001
Revises:
"""

from __future__ import annotations

from alembic import op

revision = "e0001"
down_revision: str | None = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE TABLE IF NOT EXISTS smd_example_visits ("
        "id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())"
    )


def downgrade() -> None:
    op.execute("DROP TABLE smd_example_visits")
