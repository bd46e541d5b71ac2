"""The broker's first access-control file: one admin client, everything else denied.

mosquitto's dynamic-security plugin keeps clients, groups and roles in one JSON file that it
rewrites as the operator adds municipalities. Before the broker's first start that file must
exist with the platform's admin in it; both the local platform (``urbanstack dev up``) and a
cluster (the in-cluster broker's init container, ``urbanstack mqtt seed``) write it from here.
An existing file is never replaced: it holds every municipality's client.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets as random
from pathlib import Path

ADMIN_ROLE = "urbanstack-admin"
PBKDF2_ITERATIONS = 101      # the plugin's own default for the passwords it hashes
CONTROL_TOPIC = "$CONTROL/dynamic-security/#"


def hashed(password: str) -> dict:
    """A password as the dynamic-security plugin keeps it (PBKDF2-SHA512, base64)."""
    salt = random.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS)
    return {"password": base64.b64encode(digest).decode(), "salt": base64.b64encode(salt).decode(),
            "iterations": PBKDF2_ITERATIONS}


def initial_security(admin_user: str, password: str) -> dict:
    """The plugin's configuration before the first start: the admin, deny by default. The admin
    administers clients and roles (operator) and publishes Observations (sink); nobody else
    publishes or receives anything an ACL does not allow."""
    return {
        "defaultACLAccess": {"publishClientSend": False, "publishClientReceive": False,
                             "subscribe": False, "unsubscribe": True},
        "clients": [{"username": admin_user, "textName": "Urban Stack platform admin",
                     "roles": [{"rolename": ADMIN_ROLE}], **hashed(password)}],
        "groups": [],
        "roles": [{"rolename": ADMIN_ROLE, "textName": "operator and publisher", "acls": [
            {"acltype": "publishClientSend", "topic": CONTROL_TOPIC, "priority": 0, "allow": True},
            {"acltype": "publishClientReceive", "topic": CONTROL_TOPIC, "priority": 0, "allow": True},
            {"acltype": "subscribePattern", "topic": CONTROL_TOPIC, "priority": 0, "allow": True},
            {"acltype": "publishClientSend", "topic": "v1.1/#", "priority": 0, "allow": True},
        ]}],
    }


def seed(path: Path, admin_user: str, password: str) -> bool:
    """Write the first access-control file at ``path`` unless one exists (mode 0600).
    True when it was written."""
    if not admin_user or not password:
        raise ValueError("the broker's admin user and password are both needed (URBANSTACK_MQTT_ADMIN_USER, "
                         "URBANSTACK_MQTT_ADMIN_PASSWORD)")
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(initial_security(admin_user, password), out, indent=2)
    os.replace(partial, path)
    return True


def broker_config(header: str, listeners: list[str], plugin: str, security_file: str) -> str:
    """mosquitto.conf, the same for the local platform and a cluster: ``listeners`` are the
    ``listener …`` lines (and their ``protocol``); anonymous clients get the anonymous group's
    roles (open data); nothing persisted; bounded queues and message sizes."""
    return "\n".join([
        f"# urbanstack: {header}",
        "per_listener_settings false",
        *listeners,
        "allow_anonymous true",
        f"plugin {plugin}",
        f"plugin_opt_config_file {security_file}",
        "persistence false",
        "retain_available false",
        "max_inflight_messages 100",
        "max_queued_messages 1000",      # per client: a slow subscriber loses the oldest, never the broker
        "max_packet_size 262144",
        "message_size_limit 262144",
        "log_dest stdout",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "connection_messages false",
        "",
    ])
