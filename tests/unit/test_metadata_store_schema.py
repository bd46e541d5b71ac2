"""The metadata store's migrations match its models, ship with the package, and its URL is a documented setting."""

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from urbanstack.runtime.store import mask_url, open_store
from urbanstack.runtime.store import migrate
from urbanstack.runtime.store.models import Base
from urbanstack.settings import Settings, describe

ROOT = Path(__file__).resolve().parents[2]


def test_migration_head_matches_the_models(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'm.sqlite3'}")
    store.upgrade()
    with store.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}),
                                       Base.metadata)
    store.close()
    assert differences == [], "models changed without a migration: add one in runtime/store/migrations/versions"


def test_migration_scripts_ship_with_the_package():
    assert (migrate.SCRIPTS / "env.py").is_file() and (migrate.SCRIPTS / "script.py.mako").is_file()
    assert "urbanstack.runtime.store.migrations" in (ROOT / "setup.py").read_text()
    assert not (ROOT / "alembic.ini").exists()  # the configuration is built in code


def test_metadata_url_defaults_to_sqlite_in_the_state_folder_and_is_shown_masked(tmp_path):
    settings = Settings.from_env({"URBANSTACK_STATE_DIR": str(tmp_path)})
    assert settings.metadata_url == f"sqlite:///{tmp_path / 'metadata.sqlite3'}"
    assert settings.postgres_port == 15432
    secret = Settings.from_env({"URBANSTACK_STATE_DIR": str(tmp_path), "URBANSTACK_METADATA_URL":
                                "postgresql+psycopg://urbanstack_app:s3cr3t-pw@127.0.0.1:15432/urbanstack"})
    shown = {variable: value for variable, value, _ in describe(secret)}
    assert "s3cr3t-pw" not in shown["URBANSTACK_METADATA_URL"] and "urbanstack_app" in shown["URBANSTACK_METADATA_URL"]
    assert "s3cr3t-pw" not in repr(secret)
    assert "s3cr3t-pw" not in mask_url(secret.metadata_url)


def test_an_unknown_backend_is_refused_with_the_supported_ones():
    import pytest

    from urbanstack.runtime.store import StoreError

    with pytest.raises(StoreError, match="only sqlite:/// and postgresql"):
        open_store("mysql://root:hunter2@localhost/x")
    with pytest.raises(StoreError) as failure:
        open_store("mysql://root:hunter2@localhost/x")
    assert "hunter2" not in str(failure.value)
