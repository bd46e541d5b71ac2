"""Alembic environment of the metadata store. It runs only from
``urbanstack.runtime.store.migrate``, which hands over an open connection."""

from alembic import context

from urbanstack.runtime.store.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run the metadata store's migrations with urbanstack.runtime.store.upgrade(url)")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
