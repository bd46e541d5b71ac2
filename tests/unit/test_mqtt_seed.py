"""`urbanstack mqtt seed`: the in-cluster broker's first access-control file, never replaced."""

import base64
import hashlib
import json
import stat

import pytest

from urbanstack import cli


def _run(monkeypatch, path, user="urbanstack-admin", password="s3cret-for-the-broker"):
    monkeypatch.setenv("URBANSTACK_MQTT_ADMIN_USER", user)
    monkeypatch.setenv("URBANSTACK_MQTT_ADMIN_PASSWORD", password)
    return cli.main(["mqtt", "seed", str(path)])


def test_the_first_file_holds_only_the_admin_and_denies_everything_else(monkeypatch, tmp_path, capsys):
    path = tmp_path / "data" / "dynamic-security.json"
    assert _run(monkeypatch, path) == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    document = json.loads(path.read_text())
    assert document["defaultACLAccess"] == {"publishClientSend": False, "publishClientReceive": False,
                                            "subscribe": False, "unsubscribe": True}
    (admin,) = document["clients"]
    assert admin["username"] == "urbanstack-admin"
    # Stored as the plugin verifies it (PBKDF2-SHA512), never in clear.
    digest = hashlib.pbkdf2_hmac("sha512", b"s3cret-for-the-broker", base64.b64decode(admin["salt"]),
                                 admin["iterations"])
    assert base64.b64decode(admin["password"]) == digest
    assert "s3cret-for-the-broker" not in path.read_text()
    assert "s3cret" not in capsys.readouterr().out


def test_an_existing_file_is_kept_because_it_holds_every_municipalitys_client(monkeypatch, tmp_path, capsys):
    path = tmp_path / "dynamic-security.json"
    path.write_text('{"clients": [{"username": "muni-guetersloh"}]}')
    assert _run(monkeypatch, path, password="another") == 0
    assert json.loads(path.read_text()) == {"clients": [{"username": "muni-guetersloh"}]}
    assert "kept" in capsys.readouterr().out


@pytest.mark.parametrize("user, password, missing", [("", "pw", "URBANSTACK_MQTT_ADMIN_USER"),
                                                     ("admin", "", "URBANSTACK_MQTT_ADMIN_PASSWORD")])
def test_without_the_admin_nothing_is_written_and_the_variable_is_named(monkeypatch, tmp_path, capsys, user,
                                                                         password, missing):
    path = tmp_path / "dynamic-security.json"
    assert _run(monkeypatch, path, user, password) == 2
    assert not path.exists()
    assert missing in capsys.readouterr().err
