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
# Only the migrating role may change which migration the database is at: the
# application role's default privileges on new tables would otherwise cover it too.
_PROTECT_VERSION_TABLE = """
DO $$DECLARE grantee_name text; BEGIN
  FOR grantee_name IN SELECT DISTINCT grantee FROM information_schema.role_table_grants
      WHERE table_schema = current_schema() AND table_name = 'alembic_version' AND grantee <> current_user
        AND privilege_type IN ('INSERT', 'UPDATE', 'DELETE', 'TRUNCATE') LOOP
    EXECUTE format('REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON alembic_version FROM %I', grantee_name);
  END LOOP;
END$$"""

with context.begin_transaction():
    context.run_migrations()
    if connection.dialect.name == "postgresql":
        context.execute(_PROTECT_VERSION_TABLE)
