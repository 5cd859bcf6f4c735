"""Databases at an older schema revision, as an older version of gptactions left them."""

from __future__ import annotations

from alembic import command as alembic_command

from gptactions.store.db import Database, alembic_config


async def migrate_to(url: str, revision: str) -> str:
    """Migrate the database at `url` to `revision` (and no further); its location."""
    database = Database(url)
    try:
        async with database.engine.begin() as connection:
            await connection.run_sync(
                lambda sync: alembic_command.upgrade(alembic_config(sync), revision)
            )
        return database.location
    finally:
        await database.close()
