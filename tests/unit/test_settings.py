import dataclasses
from pathlib import Path

import pytest

from urbanstack.settings import FIELDS, MissingSetting, Settings, describe


def test_defaults_are_documented_and_loopback_friendly():
    s = Settings.from_env({"HOME": "/home/ops"})
    assert s.state_dir == Path("/home/ops/.local/state/urbanstack")
    assert s.cache_dir == Path("/home/ops/.cache/urbanstack")
    assert s.warehouse_url == "chdb:///home/ops/.local/state/urbanstack/warehouse"
    assert s.apiserver_url.startswith("https://127.0.0.1:")
    assert s.kafka_bootstrap.startswith("127.0.0.1:")
    assert {row[0] for row in describe(s)} == {f.env for f in FIELDS.values()}
    assert all(f.doc for f in FIELDS.values())


def test_environment_overrides_defaults():
    s = Settings.from_env({"HOME": "/h", "URBANSTACK_STATE_DIR": "/srv/us", "URBANSTACK_KAFKA_PORT": "29092",
                           "URBANSTACK_WAREHOUSE_URL": "http://ch:8123"})
    assert s.state_dir == Path("/srv/us")
    assert s.kafka_bootstrap == "127.0.0.1:29092"
    assert s.warehouse_url == "http://ch:8123"
    assert s.kubeconfig == Path("/srv/us/kube/admin.kubeconfig")


def test_bad_number_names_the_variable():
    with pytest.raises(ValueError, match="URBANSTACK_KAFKA_PORT must be a number, got 'abc'"):
        Settings.from_env({"HOME": "/h", "URBANSTACK_KAFKA_PORT": "abc"})


def test_identities_come_from_the_environment_and_a_missing_one_names_the_variables():
    s = Settings.from_env({"HOME": "/h", "URBANSTACK_KAFKA_BOOTSTRAP": "kafka:9092",
                           "URBANSTACK_SINK_KAFKA_USER": "urbanstack-runtime",
                           "URBANSTACK_SINK_KAFKA_PASSWORD": "s3cret"})
    own = s.sink_kafka_config()
    assert (own["sasl.username"], own["sasl.password"], own["bootstrap.servers"], own["security.protocol"]) == (
        "urbanstack-runtime", "s3cret", "kafka:9092", "SASL_PLAINTEXT")
    # Nothing falls back to the local platform's super user any more.
    with pytest.raises(MissingSetting, match="set URBANSTACK_KAFKA_ADMIN_USER and URBANSTACK_KAFKA_ADMIN_PASSWORD"):
        s.kafka_admin_config()
    with pytest.raises(MissingSetting, match="set URBANSTACK_KEYCLOAK_ADMIN_PASSWORD:"):
        dataclasses.replace(s, keycloak_admin_user="admin").keycloak_admin()
    with pytest.raises(MissingSetting, match="^set URBANSTACK_SINK_KAFKA_USER and URBANSTACK_SINK_KAFKA_PASSWORD"):
        Settings.from_env({"HOME": "/h"}).sink_kafka_config()


def test_kafka_over_tls_with_a_ca_file():
    s = Settings.from_env({"HOME": "/h", "URBANSTACK_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                           "URBANSTACK_KAFKA_CA_FILE": "/etc/urbanstack/kafka-ca/ca.crt"})
    config = s.kafka_config("muni-guetersloh", "pw")
    assert config["security.protocol"] == "SASL_SSL" and config["sasl.mechanism"] == "SCRAM-SHA-512"
    assert config["ssl.ca.location"] == "/etc/urbanstack/kafka-ca/ca.crt"
    system = Settings.from_env({"HOME": "/h", "URBANSTACK_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"})
    assert system.kafka_config("u", "p")["ssl.ca.location"] == "probe"
    assert "ssl.ca.location" not in Settings.from_env({"HOME": "/h"}).kafka_config("u", "p")
    with pytest.raises(ValueError, match="URBANSTACK_KAFKA_SECURITY_PROTOCOL must be one of SASL_PLAINTEXT, SASL_SSL"):
        Settings.from_env({"HOME": "/h", "URBANSTACK_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"})
    with pytest.raises(ValueError, match="set it to SASL_SSL"):
        Settings.from_env({"HOME": "/h", "URBANSTACK_KAFKA_CA_FILE": "/ca.crt"})


def test_passwords_are_masked_in_the_settings_listing_and_repr():
    s = Settings.from_env({"HOME": "/h", "URBANSTACK_KAFKA_ADMIN_USER": "admin",
                           "URBANSTACK_KAFKA_ADMIN_PASSWORD": "hunter2-kafka",
                           "URBANSTACK_KEYCLOAK_ADMIN_PASSWORD": "hunter2-keycloak",
                           "URBANSTACK_WAREHOUSE_URL": "http://default:hunter2-ch@ch:8123"})
    listing = describe(s)
    assert "hunter2" not in repr(listing) and "hunter2" not in repr(s)
    shown = {variable: value for variable, value, _ in listing}
    assert shown["URBANSTACK_KAFKA_ADMIN_PASSWORD"] == "***" and shown["URBANSTACK_SINK_KAFKA_PASSWORD"] == ""
    assert shown["URBANSTACK_KAFKA_ADMIN_USER"] == "admin"
    assert shown["URBANSTACK_WAREHOUSE_URL"] == "http://default:***@ch:8123"


def test_flags_and_ports_are_settings():
    s = Settings.from_env({"HOME": "/h", "URBANSTACK_INGEST_PULL": "0", "URBANSTACK_HTTP_PORT": "9000"})
    assert (s.ingest_pull, s.ingest, s.ingest_allow_private_sources, s.http_port) == (False, True, False, 9000)
    with pytest.raises(ValueError, match="URBANSTACK_INGEST must be 1 or 0, got 'maybe'"):
        Settings.from_env({"HOME": "/h", "URBANSTACK_INGEST": "maybe"})


def test_no_proxy_is_trusted_by_default_and_cidrs_are_accepted():
    assert Settings.from_env({"HOME": "/h"}).trusted_networks == ()
    s = Settings.from_env({"HOME": "/h", "URBANSTACK_TRUSTED_PROXIES": "10.244.0.0/16, 192.0.2.7,2001:db8::/64"})
    assert [str(n) for n in s.trusted_networks] == ["10.244.0.0/16", "192.0.2.7/32", "2001:db8::/64"]
    for bad in ("*", "ingress-nginx", "10.0.0.0/33"):
        with pytest.raises(ValueError, match="URBANSTACK_TRUSTED_PROXIES: .* is not an address or CIDR"):
            Settings.from_env({"HOME": "/h", "URBANSTACK_TRUSTED_PROXIES": bad})


def test_production_code_does_not_import_the_dev_platform():
    """The operator and the data plane take their identities from Settings; only the local
    entry points (cli, demo) and the tests reach into urbanstack.devplatform."""
    import ast

    root = Path(__file__).resolve().parents[2]
    offenders = []
    for path in [*root.glob("operator/**/*.py"), *root.glob("runtime/**/*.py"), root / "urbanstack" / "serve.py"]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                     else [alias.name for alias in node.names] if isinstance(node, ast.Import) else [])
            if any(name.startswith("urbanstack.devplatform") for name in names):
                offenders.append(str(path.relative_to(root)))
    assert offenders == []


@pytest.mark.parametrize("command, variables, environment", [
    (["sink"], "URBANSTACK_SINK_KAFKA_USER and URBANSTACK_SINK_KAFKA_PASSWORD",
     {"URBANSTACK_WAREHOUSE_URL": "http://default:pw@127.0.0.1:1"}),
    # In a pod nothing is filled in, even with the embedded warehouse.
    (["sink"], "URBANSTACK_SINK_KAFKA_USER and URBANSTACK_SINK_KAFKA_PASSWORD", {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}),
    (["operator", "run"], "URBANSTACK_KAFKA_ADMIN_USER and URBANSTACK_KAFKA_ADMIN_PASSWORD",
     {"URBANSTACK_WAREHOUSE_URL": "http://default:pw@127.0.0.1:1"}),
])
def test_a_production_service_without_its_identity_stops_at_start(command, variables, environment, monkeypatch,
                                                                   tmp_path, capsys):
    from urbanstack import cli

    monkeypatch.setenv("URBANSTACK_STATE_DIR", str(tmp_path))
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert cli.main(command) == 2
    assert f"error: set {variables}:" in capsys.readouterr().err
    assert not (tmp_path / "secrets").exists()   # the local platform's credentials were not touched
