"""Realms send e-mail through the platform's relay: planned without the password, compared by
the keys we set, the password added only when the realm is written."""

from __future__ import annotations

from test_operator_plan import municipality

from urbanstack.operator.plan import RealmMail, plan
from urbanstack.operator.provisioners.identity import IdentityProvisioner, settings_drift
from urbanstack.settings import Settings


def _settings(**env):
    return Settings.from_env({"URBANSTACK_STATE_DIR": "/tmp/urbanstack-unit", **env})


def test_local_platform_realms_send_to_the_loopback_smtp_server():
    mail = RealmMail.from_settings(_settings())
    desired = plan(municipality(tools=[], shares=[]), {}, mail=mail).identity.realm_settings
    assert desired["smtpServer"] == {"host": "127.0.0.1", "port": "11025", "from": "no-reply@urbanstack.localhost",
                                     "fromDisplayName": "Urban Stack", "starttls": "false", "ssl": "false",
                                     "auth": "false"}


def test_a_relay_with_a_password_is_planned_without_it():
    settings = _settings(URBANSTACK_SMTP_HOST="relay.kommune.example", URBANSTACK_SMTP_PORT="587",
                         URBANSTACK_SMTP_USER="urbanstack", URBANSTACK_SMTP_PASSWORD="relay-secret-1",
                         URBANSTACK_SMTP_STARTTLS="1", URBANSTACK_SMTP_FROM="plattform@kommune.example")
    state = plan(municipality(tools=[], shares=[]), {}, mail=RealmMail.from_settings(settings))
    smtp = state.identity.realm_settings["smtpServer"]
    assert smtp["auth"] == "true" and smtp["user"] == "urbanstack" and smtp["starttls"] == "true"
    assert "relay-secret-1" not in repr(state) and "relay-secret-1" not in repr(settings)
    provisioner = IdentityProvisioner("http://127.0.0.1:1", "admin", "pw", smtp_password="relay-secret-1")
    body = provisioner._realm_body(state.identity, ["smtpServer", "enabled"])
    assert body["smtpServer"]["password"] == "relay-secret-1"
    assert "password" not in state.identity.realm_settings["smtpServer"]  # the plan stays clean


def test_without_mail_settings_the_realm_mail_is_left_alone():
    assert "smtpServer" not in plan(municipality(tools=[], shares=[]), {}).identity.realm_settings


def test_smtp_drift_ignores_the_masked_password_and_finds_a_changed_host():
    desired = {"smtpServer": RealmMail("relay.example", 587, "a@b.example", user="u").realm_value()}
    live = {"smtpServer": dict(desired["smtpServer"], password="**********")}
    assert settings_drift(desired, live) == []
    assert settings_drift(desired, {"smtpServer": dict(live["smtpServer"], host="old.example")}) == ["smtpServer"]
    assert settings_drift(desired, {}) == ["smtpServer"]
