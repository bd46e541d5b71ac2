"""One immutable settings object, built from ``URBANSTACK_*`` environment variables.

Every variable has a declared default (see ``FIELDS``); ``urbanstack settings``
prints the values in force. Secrets are never settings: they live in files under
the state folder (mode 0600) or in Kubernetes Secrets.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path


def _home(environ) -> Path:
    return Path(environ.get("HOME") or os.path.expanduser("~"))


@dataclass(frozen=True)
class Field:
    env: str
    default: str
    doc: str


FIELDS: dict[str, Field] = {
    "state_dir": Field("URBANSTACK_STATE_DIR", "~/.local/state/urbanstack",
                       "Data, logs, pid files and generated credentials of the local platform."),
    "cache_dir": Field("URBANSTACK_CACHE_DIR", "~/.cache/urbanstack",
                       "Downloads and builds, keyed by version; shared by every checkout."),
    "warehouse_url": Field("URBANSTACK_WAREHOUSE_URL", "",
                           "ClickHouse server URL (http://user:pass@host:8123) or chdb://<path>; "
                           "empty means the embedded chDB under <state_dir>/warehouse."),
    # Ports stay below Linux's ephemeral range (32768+): a probe of a closed port
    # up there can connect to itself and look like a broken server.
    "etcd_port": Field("URBANSTACK_ETCD_PORT", "23790", "etcd client port (peer +10, metrics +20)."),
    "apiserver_port": Field("URBANSTACK_APISERVER_PORT", "16443", "kube-apiserver secure port."),
    "controller_manager_port": Field("URBANSTACK_CONTROLLER_MANAGER_PORT", "16444",
                                     "kube-controller-manager secure (health) port."),
    "kafka_port": Field("URBANSTACK_KAFKA_PORT", "19092", "Kafka SASL/SCRAM client listener."),
    "kafka_controller_port": Field("URBANSTACK_KAFKA_CONTROLLER_PORT", "19093", "Kafka KRaft controller listener."),
    "keycloak_port": Field("URBANSTACK_KEYCLOAK_PORT", "18080", "Keycloak HTTP port."),
    "keycloak_management_port": Field("URBANSTACK_KEYCLOAK_MANAGEMENT_PORT", "19000",
                                      "Keycloak management port (health endpoints)."),
    "municipality_directory": Field("URBANSTACK_MUNICIPALITY_DIRECTORY", "",
                                    "Destatis municipality directory (derived CSV: ags,ars,name,...,population); "
                                    "when set, an AGS must name a real Gemeinde. Empty: check the format only."),
    "ready_timeout": Field("URBANSTACK_READY_TIMEOUT", "240",
                           "Seconds to wait for one service to become ready before giving up."),
    "drift_interval": Field("URBANSTACK_DRIFT_INTERVAL", "60",
                            "Seconds between the operator's re-observations that repair drift."),
    "kafka_bootstrap_servers": Field("URBANSTACK_KAFKA_BOOTSTRAP", "",
                                     "Kafka bootstrap servers; empty means the local platform's broker."),
    "keycloak_server_url": Field("URBANSTACK_KEYCLOAK_URL", "",
                                 "Keycloak base URL; empty means the local platform's Keycloak."),
    "kafka_heap": Field("URBANSTACK_KAFKA_HEAP", "512m", "Kafka JVM maximum heap."),
    "keycloak_heap": Field("URBANSTACK_KEYCLOAK_HEAP", "768m", "Keycloak JVM maximum heap."),
    "api_anonymous_queries_per_hour": Field("URBANSTACK_API_ANONYMOUS_QUERIES_PER_HOUR", "600",
                                            "API data queries per hour without a token (open data), per client "
                                            "IPv4 address or IPv6 /64, counted per API process; 0: no limit."),
    "trusted_proxies": Field("URBANSTACK_TRUSTED_PROXIES", "127.0.0.1",
                             "Comma-separated addresses (or *) of reverse proxies whose X-Forwarded-For the HTTP "
                             "services believe; behind an ingress, its address, so per-address limits see clients."),
}


@dataclass(frozen=True)
class Settings:
    state_dir: Path
    cache_dir: Path
    warehouse_url: str
    etcd_port: int
    apiserver_port: int
    controller_manager_port: int
    kafka_port: int
    kafka_controller_port: int
    keycloak_port: int
    keycloak_management_port: int
    municipality_directory: str
    ready_timeout: float
    drift_interval: float
    kafka_bootstrap_servers: str
    keycloak_server_url: str
    kafka_heap: str
    keycloak_heap: str
    api_anonymous_queries_per_hour: int = 600
    trusted_proxies: str = "127.0.0.1"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> "Settings":
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for field in dataclasses.fields(cls):
            spec = FIELDS[field.name]
            raw = environ.get(spec.env, spec.default)
            try:
                if field.type in ("Path",):
                    values[field.name] = Path(raw.replace("~", str(_home(environ)), 1) if raw.startswith("~") else raw).resolve()
                elif field.type == "int":
                    values[field.name] = int(raw)
                elif field.type == "float":
                    values[field.name] = float(raw)
                else:
                    values[field.name] = raw
            except ValueError:
                raise ValueError(f"{spec.env} must be a number, got {raw!r}") from None
        settings = cls(**values)  # type: ignore[arg-type]
        if not settings.warehouse_url:
            settings = dataclasses.replace(settings, warehouse_url=f"chdb://{settings.state_dir / 'warehouse'}")
        return settings

    # Derived locations -------------------------------------------------
    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def run_dir(self) -> Path:
        return self.state_dir / "run"

    @property
    def secrets_dir(self) -> Path:
        return self.state_dir / "secrets"

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kube" / "admin.kubeconfig"

    @property
    def apiserver_url(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"

    @property
    def kafka_bootstrap(self) -> str:
        return self.kafka_bootstrap_servers or f"127.0.0.1:{self.kafka_port}"

    @property
    def keycloak_url(self) -> str:
        return (self.keycloak_server_url or f"http://127.0.0.1:{self.keycloak_port}").rstrip("/")

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.etcd_port}"


def describe(settings: Settings) -> list[tuple[str, str, str]]:
    """(variable, value in force, meaning) for every setting."""
    return [(spec.env, str(getattr(settings, name)), spec.doc) for name, spec in FIELDS.items()]
