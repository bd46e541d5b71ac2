"""Urban Stack's Keycloak login theme: its content-hashed name, its installation into a themes
folder, and the realms that name it (operator plan with drift repair, platform realm).
The pages themselves are checked in Chromium with axe-core by tests/browser/test_signup_acceptance.py."""

from __future__ import annotations

from test_operator_plan import municipality

from urbanstack import keycloak_theme
from urbanstack.operator.plan import plan
from urbanstack.operator.provisioners.identity import settings_drift
from urbanstack.runtime.hubs.signup import ops_auth


def test_the_theme_has_our_pages_on_keycloak_v2_and_a_name_from_its_content():
    files = keycloak_theme.files()
    assert {"login/login.ftl", "login/login-password.ftl", "login/login-otp.ftl", "login/login-config-totp.ftl",
            "login/messages/messages_de.properties"} <= set(files)
    assert b"parent=keycloak.v2" in files["login/theme.properties"]
    assert "Einmalcode" in files["login/messages/messages_de.properties"].decode()
    name = keycloak_theme.name()
    assert name.startswith("urbanstack-") and len(name) == len("urbanstack-") + 12


def test_installing_writes_the_theme_once_under_its_name(tmp_path):
    name = keycloak_theme.install(tmp_path)
    assert name == keycloak_theme.name()
    written = {p.relative_to(tmp_path / name).as_posix(): p.read_bytes()
               for p in (tmp_path / name).rglob("*") if p.is_file()}
    assert written == keycloak_theme.files()
    assert keycloak_theme.install(tmp_path) == name  # again: nothing changes, no staging folder left
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_tenant_shared_and_platform_realms_name_the_theme_and_drift_is_repaired():
    for strategy in ("organization", "realm"):  # the shared realm, a realm of its own
        settings = plan(municipality(tools=[], shares=[], identity={"strategy": strategy}), {}).identity.realm_settings
        assert settings["loginTheme"] == keycloak_theme.name()
        assert settings_drift(settings, dict(settings, loginTheme="keycloak.v2")) == ["loginTheme"]
    assert ops_auth.platform_realm(None)["loginTheme"] == keycloak_theme.name()
