"""MQTT for the local platform: Debian's mosquitto on 127.0.0.1 (``URBANSTACK_MQTT_PORT``) with
its dynamic-security plugin, so that tenant clients, roles and topic ACLs are real.

SensorThings clients subscribe to ``v1.1/Datastreams(<id>)/Observations`` here; the sink
publishes each stored Observation (docs/sensorthings.md, *MQTT*). Before the broker first
starts, ``prepare`` writes the plugin's configuration with one client, the platform's admin
(password generated into ``secrets/``, stored as a PBKDF2 hash as the plugin does), and
access denied by default: nobody publishes or receives anything an ACL does not allow.
Anonymous clients connect and get only what the anonymous group's roles allow (open data).

mosquitto drops root privileges to Debian's ``mosquitto`` user, which cannot enter root's
private home: as root, its folder is ``/var/lib/mosquitto/urbanstack/<key of the state
folder>`` (linked from ``<state>/mosquitto``), otherwise ``<state>/mosquitto``. Nothing is
persisted but the plugin's file (clients, groups, roles): no retained messages, no sessions.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from urbanstack.devplatform import debian, secrets, system_user
from urbanstack.devplatform.service import Service, port_open
from urbanstack.runtime.mqtt.security import broker_config, initial_security

BINARY = Path("/usr/sbin/mosquitto")
PLUGIN = Path("/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so")
ADMIN_USER = "urbanstack-admin"
SYSTEM_USER = "mosquitto"   # Debian's, when we run as root
_ROOT_HOMES = Path("/var/lib/mosquitto/urbanstack")


def admin_password(settings) -> str:
    return secrets.get_or_create(settings.secrets_dir, "mqtt-admin-password")


_as_root = system_user.as_root


def home(settings) -> Path:
    if _as_root():
        return system_user.folder(_ROOT_HOMES, settings.state_dir)
    return settings.state_dir / "mosquitto"


class Mosquitto(Service):
    name = "mosquitto"

    @property
    def home(self) -> Path:
        return home(self.settings)

    @property
    def config_path(self) -> Path:
        return self.home / "mosquitto.conf"

    @property
    def security_path(self) -> Path:
        return self.home / "dynamic-security.json"

    def install(self) -> None:
        debian.ensure_installed("mosquitto", provides=BINARY, what="MQTT broker")

    def _own(self, path: Path) -> None:
        system_user.own(path, SYSTEM_USER)

    def _write(self, path: Path, text: str) -> None:
        system_user.write_private(path, text, SYSTEM_USER)

    def prepare(self) -> None:
        s = self.settings
        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._own(self.home)
        if _as_root():
            link = s.state_dir / "mosquitto"
            if not link.is_symlink():
                link.symlink_to(self.home)
        if not self.security_path.exists():
            self._write(self.security_path, json.dumps(initial_security(ADMIN_USER, admin_password(s)), indent=2))
        self._write(self.config_path, broker_config("written by `urbanstack dev up`; changes are overwritten",
                                                    [f"listener {s.mqtt_port} 127.0.0.1"], str(PLUGIN),
                                                    str(self.security_path)))

    def command(self):
        return system_user.command_as(SYSTEM_USER, [str(BINARY), "-c", str(self.config_path)]), dict(os.environ)

    def ready(self) -> bool:
        if not port_open(self.settings.mqtt_port):
            return False
        from urbanstack.runtime.mqtt.client import authenticates

        try:
            return authenticates(self.settings.mqtt_server, self.settings.mqtt_port, ADMIN_USER,
                                 admin_password(self.settings), timeout=3.0)
        except Exception:  # noqa: BLE001 - not ready yet
            return False

    def endpoint(self) -> str:
        return f"mqtt://127.0.0.1:{self.settings.mqtt_port} (admin {ADMIN_USER})"

    def purge(self) -> None:
        if _as_root():
            shutil.rmtree(self.home, ignore_errors=True)


def ensure_running(settings) -> None:
    """Start the broker unless it runs (what ``urbanstack dev up`` does for it; idempotent)."""
    from urbanstack.devplatform import platform

    platform.up(settings, ["mosquitto"])
