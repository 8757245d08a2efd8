"""The example app's Alembic environment (online mode only).

MigrationsPhase sets ``sqlalchemy.url`` (SMD_DATABASE_URL, with a sync
driver). Nothing here configures logging: inside the service, the host's
logging configuration stays as it is.
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
    raise SystemExit("these migrations run online only (MigrationsPhase or alembic upgrade)")
run_migrations_online()
