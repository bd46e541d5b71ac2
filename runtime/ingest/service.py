"""``urbanstack ingest``: the push endpoints and the pull scheduler in one process.

The process logs in to Kubernetes as the runtime's identity (read the custom
resources; ``get`` the ``urbanstack-ingest`` Secret of each tenant namespace, nothing
else) and to Kafka as each tenant's own user, read from that Secret. It needs no
warehouse, so it can run next to ``urbanstack serve`` with the embedded one.

Its settings (``urbanstack.settings``): ``URBANSTACK_INGEST_AUDIENCE``,
``URBANSTACK_INGEST_PULL``, ``URBANSTACK_INGEST_ALLOW_PRIVATE_SOURCES``.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry

from urbanstack.operator import naming
from urbanstack.runtime.api.auth import TokenVerifier
from urbanstack.runtime.api.catalogue import Catalogue
from urbanstack.runtime.connectors.cursor import FileCursorStore
from urbanstack.runtime.ingest.pull import PullScheduler
from urbanstack.runtime.ingest.push import create_push_app
from urbanstack.runtime.ingest.tenants import CredentialSource, DailyQuota, KubernetesCredentials, TenantPublishers

log = logging.getLogger("urbanstack.ingest")

DEFAULT_PORT = 8081


def cursor_path(settings) -> Any:
    return settings.state_dir / "ingest" / "cursors.json"


@dataclass
class Ingest:
    app: Any
    scheduler: PullScheduler | None
    publishers: TenantPublishers
    catalogue: Catalogue
    loaded: threading.Event

    @property
    def uploads(self):
        """The CSV/XLSX preview and import the push endpoints use (the Gov Hub's upload page
        gets it as ``extras["ingest"]``)."""
        return self.app.state.uploads

    @property
    def writes(self):
        """Publishing for a caller the API's token check established (SensorThings POST)."""
        return self.app.state.writes


def build(settings, catalogue: Catalogue, *, credentials: CredentialSource | None = None,
          verifier: TokenVerifier | None = None, pull: bool | None = None, route_prefix: str = "/ingest/v1",
          allow_private_sources: bool | None = None, loaded: threading.Event | None = None,
          ledger=None) -> Ingest:
    """Push app and scheduler sharing catalogue, producers and quota. With
    ``route_prefix="/v1"`` the app is meant to be mounted at ``/ingest``. With the usage
    ``ledger`` the daily quota counts what the sinks metered for all replicas."""
    if credentials is None:
        from urbanstack import serve

        credentials = KubernetesCredentials(serve._kube(settings))
    def tenant_tools(slug: str) -> list[str] | None:
        municipality = catalogue.municipality(slug)
        return [enabled.name for enabled in municipality.spec.tools] if municipality else None

    verifier = verifier or TokenVerifier(settings.keycloak_url,
                                         settings.ingest_audience,
                                         shared_realms=(naming.SHARED_REALM,), tenant_tools=tenant_tools)
    loaded = loaded or threading.Event()
    registry = CollectorRegistry()
    shared = None
    if ledger is not None:
        from urbanstack.runtime.metering.events import READINGS_INGESTED
        from urbanstack.runtime.metering.quota import SharedCounts

        shared = SharedCounts(ledger, READINGS_INGESTED, span="day")
    quota = DailyQuota(shared=shared)
    publishers = TenantPublishers(settings, credentials)
    scheduler = None
    if pull if pull is not None else settings.ingest_pull:
        allow = allow_private_sources if allow_private_sources is not None else settings.ingest_allow_private_sources
        scheduler = PullScheduler(catalogue, publishers, credentials, FileCursorStore(cursor_path(settings)),
                                  quota=quota, allow_private_networks=allow, registry=registry)
    app = create_push_app(catalogue, publishers, credentials, verifier=verifier, quota=quota,
                          catalogue_ready=loaded.is_set,
                          sources_status=scheduler.status if scheduler else None, registry=registry,
                          route_prefix=route_prefix)
    return Ingest(app=app, scheduler=scheduler, publishers=publishers, catalogue=catalogue, loaded=loaded)


def _catalogue_loop(catalogue: Catalogue, settings, stop: threading.Event, loaded: threading.Event,
                    interval: float) -> None:
    import kubernetes

    from urbanstack import serve

    custom = kubernetes.client.CustomObjectsApi(serve._kube(settings))
    while not stop.is_set():
        try:
            serve.refresh_catalogue(catalogue, custom)
            loaded.set()
        except Exception as exc:  # noqa: BLE001 - keep the last catalogue; retry
            log.warning("catalogue refresh failed (%s); keeping the previous one", str(exc)[:200])
        stop.wait(interval)


def start_background(settings, ingest: Ingest, stop: threading.Event, *, catalogue_loop: bool = True,
                     catalogue_interval: float = 10.0) -> list[threading.Thread]:
    """The catalogue refresh (unless the caller keeps the catalogue current) and the scheduler."""
    threads = []
    if catalogue_loop:
        threads.append(threading.Thread(target=_catalogue_loop, name="ingest-catalogue", daemon=True,
                                        args=(ingest.catalogue, settings, stop, ingest.loaded, catalogue_interval)))
    if ingest.scheduler is not None:
        def scheduler():
            ingest.loaded.wait()
            ingest.scheduler.run(stop)
        threads.append(threading.Thread(target=scheduler, name="ingest-pull", daemon=True))
    for thread in threads:
        thread.start()
    return threads


def run(settings, *, host: str = "127.0.0.1", port: int = DEFAULT_PORT, pull: bool | None = None) -> int:
    from urbanstack.serve import http_server

    stop = threading.Event()
    ingest = build(settings, Catalogue(), pull=pull)
    threads = start_background(settings, ingest, stop)
    try:
        http_server(ingest.app, settings, host, port).run()
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
        ingest.publishers.close()
    return 0
