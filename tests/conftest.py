"""Session fixtures: the real local platform, started once (or reused), and
ready clients for each backend."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from urbanstack.settings import Settings

SHARED = Path(__file__).resolve().parent.parent.parent / "shared"


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings.from_env()


@pytest.fixture(scope="session")
def platform(settings):
    """Bring the whole local platform up once per session (no-op if it runs); the
    settings carry the local platform's credentials, as on `urbanstack serve`."""
    from urbanstack.devplatform import credentials
    from urbanstack.devplatform import platform as dev_platform

    if os.environ.get("URBANSTACK_TEST_NO_PLATFORM"):
        pytest.skip("URBANSTACK_TEST_NO_PLATFORM is set: integration tests need the local platform")
    dev_platform.up(settings)
    return credentials.fill(settings)


@pytest.fixture(scope="session")
def kube_api(platform):
    import kubernetes

    return kubernetes.config.new_client_from_config(config_file=str(platform.kubeconfig))


@pytest.fixture(scope="session")
def kafka_admin(platform):
    from confluent_kafka.admin import AdminClient

    from urbanstack.devplatform import kafka

    return AdminClient(kafka.admin_config(platform))


@pytest.fixture(scope="session")
def keycloak_admin(platform):
    from keycloak import KeycloakAdmin, KeycloakOpenIDConnection

    from urbanstack.devplatform import keycloak

    connection = KeycloakOpenIDConnection(
        server_url=platform.keycloak_url, username=keycloak.ADMIN_USER,
        password=keycloak.admin_password(platform), realm_name="master", user_realm_name="master",
        verify=True,
    )
    return KeycloakAdmin(connection=connection)


@pytest.fixture(scope="session")
def warehouse(settings, tmp_path_factory):
    """A warehouse client: the embedded chDB by default, a server when
    URBANSTACK_WAREHOUSE_URL points at one. In embedded mode the test session
    owns a fresh data path of its own, so it never fights a demo, an operator
    or another test run over the lock."""
    from urbanstack import warehouse as wh

    url = settings.warehouse_url
    if wh.is_embedded(url):
        url = f"chdb://{tmp_path_factory.mktemp('warehouse')}"
    return wh.connect(url)


@pytest.fixture(scope="session")
def shared_fixtures() -> Path:
    fixtures = SHARED / "fixtures"
    if not fixtures.is_dir():
        pytest.skip(f"real sample data lives in {fixtures}, which is absent in this checkout")
    return fixtures


@pytest.fixture(scope="module")
def issuer():
    """A local OpenID issuer (JWKS on 127.0.0.1) that signs test tokens; one per test module."""
    from api_tokens import LocalIssuer

    server = LocalIssuer()
    yield server
    server.close()


from store_fixtures import metadata_postgres, metadata_store, store, store_urls  # noqa: E402,F401 - the metadata store on both backends
from mail_fixtures import mailbox  # noqa: E402,F401 - real SMTP (the platform's or a private server)
