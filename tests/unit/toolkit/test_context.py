"""The tool context is built from what the operator puts into a tool's Deployment, and only that."""

import json
import logging

import pytest
import yaml

from urbanstack.operator.models import parse_citytool, parse_municipality
from urbanstack.operator.plan import plan
from urbanstack.toolkit import ContextError, ToolContext
from urbanstack.toolkit import notify

from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SECRET = "client-s3cret-value"
KAFKA_PASSWORD = "kafka-pa55word-value"


def _deployment_env(tmp_path):
    """The env of the operator's Deployment for pegel-warnung in Gütersloh, resolved the way the
    kubelet would: values as they are, secretKeyRefs from a Secret, the ConfigMap as a file."""
    tool = parse_citytool(yaml.safe_load((ROOT / "examples" / "citytool-pegel-warnung.yaml").read_text()))
    other = parse_citytool(yaml.safe_load((ROOT / "examples" / "citytool-passantenfrequenz-wetter.yaml").read_text()))
    municipality = parse_municipality(yaml.safe_load((ROOT / "examples" / "municipality-guetersloh.yaml").read_text()))
    state = plan(municipality, [tool, other])
    secret = {"kafka-username": "muni-guetersloh", "kafka-password": KAFKA_PASSWORD,
              "tool-pegel-warnung-client-secret": SECRET}
    deployment = state.runtime.get("Deployment", "tool-pegel-warnung").manifest
    configmap = state.runtime.get("ConfigMap", "tool-pegel-warnung-settings").manifest
    (tmp_path / "settings.json").write_text(configmap["data"]["settings.json"])
    env = {}
    for variable in deployment["spec"]["template"]["spec"]["containers"][0]["env"]:
        if "value" in variable:
            env[variable["name"]] = variable["value"]
        else:
            env[variable["name"]] = secret[variable["valueFrom"]["secretKeyRef"]["key"]]
    env["URBANSTACK_TOOL_SETTINGS"] = str(tmp_path / "settings.json")
    return env


def test_context_from_the_operators_deployment(tmp_path):
    ctx = ToolContext.from_environment(_deployment_env(tmp_path))
    assert (ctx.municipality, ctx.tool, ctx.ags) == ("guetersloh", "pegel-warnung", "05754008")
    assert ctx.settings == {"warnLevelCm": 180, "alarmLevelCm": 240}
    assert ctx.topic("water_levels") == "guetersloh.pegel-warnung.water_levels"
    assert ctx.topic("water_levels", "bielefeld") == "bielefeld.pegel-warnung.water_levels"
    assert ctx.group().startswith("guetersloh.")  # the only groups the tenant's ACLs allow
    config = ctx.kafka_config()
    assert config["sasl.username"] == "muni-guetersloh" and config["sasl.password"] == KAFKA_PASSWORD


def test_secrets_never_show_in_repr_or_redacted_text(tmp_path, caplog):
    ctx = ToolContext.from_environment(_deployment_env(tmp_path))
    assert SECRET not in repr(ctx) and KAFKA_PASSWORD not in repr(ctx)
    assert ctx.redact(f"login {KAFKA_PASSWORD} failed") == "login *** failed"

    def boom():
        raise RuntimeError(f"relay said no to {SECRET}")

    with caplog.at_level(logging.WARNING):
        assert notify.retry(boom, "mail", attempts=2, backoff=0, redact=ctx.redact) is False
    assert SECRET not in caplog.text and "***" in caplog.text


def test_secrets_may_come_from_mounted_files(tmp_path):
    env = _deployment_env(tmp_path)
    (tmp_path / "password").write_text(KAFKA_PASSWORD + "\n")
    env.pop("URBANSTACK_KAFKA_PASSWORD")
    env["URBANSTACK_KAFKA_PASSWORD_FILE"] = str(tmp_path / "password")
    assert ToolContext.from_environment(env).kafka_config()["sasl.password"] == KAFKA_PASSWORD


def test_missing_credentials_are_named_without_values(tmp_path):
    env = _deployment_env(tmp_path)
    env.pop("URBANSTACK_CLIENT_SECRET")
    with pytest.raises(ContextError, match="URBANSTACK_CLIENT_SECRET") as caught:
        ToolContext.from_environment(env)
    assert KAFKA_PASSWORD not in str(caught.value)


def test_a_context_cannot_claim_another_municipalitys_client(tmp_path):
    env = _deployment_env(tmp_path) | {"URBANSTACK_CLIENT_ID": "bielefeld--tool-pegel-warnung"}
    with pytest.raises(ContextError, match="not the client"):
        ToolContext.from_environment(env)


def test_bad_settings_file_is_a_clear_error(tmp_path):
    env = _deployment_env(tmp_path)
    Path(env["URBANSTACK_TOOL_SETTINGS"]).write_text("[1, 2")
    with pytest.raises(ContextError, match="not readable JSON"):
        ToolContext.from_environment(env)


def test_webhook_signature_verifies_and_differs_per_subscription():
    body = json.dumps({"a": 1}).encode()
    one, two = notify.subscription_secret(SECRET, "https://a.example/hook"), \
        notify.subscription_secret(SECRET, "https://b.example/hook")
    assert one != two
    header = notify.signature(one, body, 1_700_000_000)
    assert notify.verify(one, body, header, now=1_700_000_010)
    assert not notify.verify(two, body, header, now=1_700_000_010)
    assert not notify.verify(one, body + b" ", header, now=1_700_000_010)
    assert not notify.verify(one, body, header, now=1_700_001_000)  # too old: a replay
