"""The local platform's generated credentials, handed to the services explicitly.

Production code reads every identity from ``Settings`` and refuses to start without
it. Only the local development entry points (``urbanstack serve``, ``demo``,
``operator run`` and ``sink`` outside a cluster with the embedded warehouse, and the
tests) call :func:`fill`, which puts the credentials that ``urbanstack dev up``
generated into the identities the environment left empty. The local platform has
one Kafka user besides the tenants', its super user, so the local sink logs in as it.
"""

from __future__ import annotations

import dataclasses

from urbanstack import kubeclient, warehouse
from urbanstack.devplatform import kafka, keycloak, mosquitto
from urbanstack.settings import Settings


def is_local(settings: Settings) -> bool:
    """The local platform: no cluster around the process, and the embedded warehouse,
    which exists only for local development."""
    return not kubeclient.in_cluster() and warehouse.is_embedded(settings.warehouse_url)


def fill(settings: Settings) -> Settings:
    """``settings`` with every identity the environment left empty (user and password both
    unset) taken from the local platform's credential files (0600, created if absent)."""
    values: dict[str, str] = {}
    local = {"kafka_admin": (kafka.ADMIN_USER, lambda: kafka.admin_password(settings)),
             "sink_kafka": (kafka.ADMIN_USER, lambda: kafka.admin_password(settings)),
             "keycloak_admin": (keycloak.ADMIN_USER, lambda: keycloak.admin_password(settings)),
             "gov_hub_keycloak": (keycloak.GOV_HUB_CLIENT, lambda: keycloak.gov_hub_secret(settings)),
             "mqtt_admin": (mosquitto.ADMIN_USER, lambda: mosquitto.admin_password(settings))}
    for prefix, (user, password) in local.items():
        if not getattr(settings, f"{prefix}_user") and not getattr(settings, f"{prefix}_password"):
            values |= {f"{prefix}_user": user, f"{prefix}_password": password()}
    return dataclasses.replace(settings, **values)
