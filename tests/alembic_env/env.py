"""The Alembic environment of the migrations tests: three revisions, online mode only.

The URL comes from the configuration's ``sqlalchemy.url`` (MigrationsPhase
sets it, with a sync driver); nothing here configures logging, so running
it inside a service leaves the host's logging alone.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import engine_from_config, pool

config = context.config


def run_migrations_online() -> None:
    connectable = engine_from_config(
        config.get_section(config.config_ini_section, {}),
        prefix="sqlalchemy.",
        poolclass=pool.NullPool,
    )
    with connectable.connect() as connection:
        context.configure(connection=connection, target_metadata=None)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("the test environment runs online only")
run_migrations_online()
