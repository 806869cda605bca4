"""Alembic environment: the engine comes from the caller (prism_backends.db.migrate)."""

from __future__ import annotations

from alembic import context

from prism_backends.db.metadata import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
