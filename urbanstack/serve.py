"""``urbanstack serve``: the data plane (sink + API), and in the embedded
warehouse mode the operator too, in one process.

chDB lets exactly one process own a data path, so with ``chdb://`` everything
that touches the warehouse — operator (DDL), sink (inserts) and API (queries) —
shares one client in this process. Against a ClickHouse server the same pieces
can run as separate processes (``urbanstack operator run``, ``sink``, ``api``,
``ingest``, ``hub``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import kubernetes

from urbanstack import kubeclient, warehouse
from urbanstack.settings import Settings

GROUP, VERSION = "urbanstack.io", "v1alpha1"
# How often the signup's follower looks at approved requests (Ready? invitation sent?).
SIGNUP_FOLLOW_SECONDS = 5.0
log = logging.getLogger("urbanstack.serve")


def runtime_kubeconfig(settings: Settings) -> str | None:
    """The data plane's own read-only identity (None inside a cluster)."""
    if kubeclient.in_cluster():
        return None
    return settings.runtime_kubeconfig or str(settings.state_dir / "kube" / "runtime.kubeconfig")


def _kube(settings: Settings) -> kubernetes.client.ApiClient:
    return kubeclient.api_client(runtime_kubeconfig(settings))


def refresh_catalogue(catalogue, custom: kubernetes.client.CustomObjectsApi) -> int:
    """Load every valid Municipality and CityTool into the API's catalogue."""
    from urbanstack.operator.models import SpecError, parse_citytool, parse_municipality

    municipalities, tools = [], []
    for item in custom.list_cluster_custom_object(GROUP, VERSION, "municipalities").get("items", []):
        try:
            municipalities.append(parse_municipality(item))
        except SpecError:
            continue  # its own status says what is wrong
    for item in custom.list_cluster_custom_object(GROUP, VERSION, "citytools").get("items", []):
        try:
            tools.append(parse_citytool(item))
        except SpecError:
            continue
    catalogue.replace(municipalities, tools)
    return len(catalogue.datasets())


def _catalogue_loop(catalogue, settings: Settings, stop: threading.Event, interval: float,
                    api_client: kubernetes.client.ApiClient | None = None) -> None:
    """``api_client``: whose identity reads the catalogue (default: the data plane's)."""
    custom = kubernetes.client.CustomObjectsApi(api_client or _kube(settings))
    while not stop.is_set():
        try:
            refresh_catalogue(catalogue, custom)
        except Exception as exc:  # noqa: BLE001 - keep serving the last catalogue; retry
            log.warning("catalogue refresh failed (%s); keeping the previous one", str(exc)[:200])
        stop.wait(interval)


def start_operator(settings: Settings, client, stop: threading.Event) -> threading.Thread:
    """The operator in a thread of this process, sharing its warehouse client;
    returns once Kopf is ready. It logs in as the operator's own identity."""
    import kopf

    from urbanstack.operator import handlers
    from urbanstack.operator.backends import Backends

    handlers.configure(settings, Backends.from_settings(settings, warehouse_client=client))
    ready = threading.Event()

    def target():
        asyncio.run(kopf.operator(clusterwide=True, standalone=True, stop_flag=stop, ready_flag=ready))

    thread = threading.Thread(target=target, name="operator", daemon=True)
    thread.start()
    ready.wait(60)
    return thread


def run(settings: Settings, *, host: str = "127.0.0.1", port: int = 8080, with_operator: bool | None = None,
        catalogue_interval: float = 10.0) -> int:
    from urbanstack.runtime.api import Catalogue, create_app
    from urbanstack.runtime.sink import run_sink

    settings.sink_kafka_config()  # the sink thread's identity: refuse to start without it
    client = warehouse.shared(settings.warehouse_url)
    if with_operator is None:
        with_operator = warehouse.is_embedded(settings.warehouse_url)
    stop = threading.Event()
    catalogue = Catalogue()
    threads = [threading.Thread(target=_catalogue_loop, args=(catalogue, settings, stop, catalogue_interval),
                                name="catalogue", daemon=True),
               threading.Thread(target=run_sink, args=(settings, stop), kwargs={"warehouse_client": client},
                                name="sink", daemon=True)]
    for thread in threads:
        thread.start()
    if with_operator:
        threads.append(start_operator(settings, client, stop))
    metering = _start_metering(settings, client, catalogue, stop)
    app = create_app(settings, catalogue, client, keycloak_url=settings.keycloak_url, audience="{tenant}-api",
                     meter=metering.api_meter if metering else None, ledger=metering.ledger if metering else None,
                     statements=metering.statements if metering else None,
                     seller=metering.seller if metering else None,
                     collectors=[metering.collector] if metering else [])
    if settings.ingest:
        # Push endpoints under /ingest and the pull scheduler (runtime/ingest); URBANSTACK_INGEST=0 turns them off.
        from urbanstack.runtime.ingest import service as ingest_service

        ingest = ingest_service.build(settings, Catalogue(), route_prefix="/v1",
                                      ledger=metering.ledger if metering else None)
        threads += ingest_service.start_background(settings, ingest, stop)
        app.mount("/ingest", ingest.app)
        app.state.sensorthings_writes = ingest.writes   # SensorThings POST of Observations (docs/sensorthings.md)
    store = open_metadata_store(settings)
    extras = {"ingest": ingest.uploads} if settings.ingest else {}
    web = web_app(settings, catalogue, app, store, extras=extras, signup_follow_interval=SIGNUP_FOLLOW_SECONDS)
    server = http_server(PathDispatch(app, web), settings, host, port)
    try:
        server.run()
    finally:
        stop.set()
        stop_web_app(web)
        store.close()
        if metering is not None:
            metering.api_meter.close()
            threads += metering.threads
        deadline = time.monotonic() + 30
        for thread in threads:
            thread.join(max(0.1, deadline - time.monotonic()))
    return 0


def _start_metering(settings: Settings, client, catalogue, stop: threading.Event):
    """Usage metering (docs/metering.md) in this process, which owns the warehouse; off when
    URBANSTACK_METER_TOPIC is empty."""
    from urbanstack.runtime.metering import service as metering
    from urbanstack.runtime.sink import SinkConfig

    topic = SinkConfig.from_env().meter_topic
    if not topic:
        return None
    return metering.start(settings.sink_kafka_config(), client, catalogue, stop, topic=topic)


def run_api(settings: Settings, *, host: str = "127.0.0.1", port: int = 8080) -> int:
    """The API alone, for a ClickHouse server (the embedded warehouse belongs to ``serve``)."""
    from urbanstack.runtime.api import Catalogue, create_app

    if warehouse.is_embedded(settings.warehouse_url):
        raise SystemExit("error: 'urbanstack api' needs a ClickHouse server URL in URBANSTACK_WAREHOUSE_URL; "
                         "with the embedded warehouse run 'urbanstack serve', which owns it")
    stop = threading.Event()
    catalogue = Catalogue()
    threading.Thread(target=_catalogue_loop, args=(catalogue, settings, stop, 10.0), daemon=True).start()
    app = create_app(settings, catalogue, warehouse.shared(settings.warehouse_url),
                     keycloak_url=settings.keycloak_url, audience="{tenant}-api")
    try:
        http_server(app, settings, host, port).run()
    finally:
        stop.set()
    return 0


def hub_kubeconfig(settings: Settings) -> str | None:
    """The Gov Hub's own identity (None inside a cluster: the pod's service account)."""
    from urbanstack.runtime.hubs.gov.kube import kubeconfig_path

    return kubeconfig_path(settings)


def run_hub(settings: Settings, *, host: str = "127.0.0.1", port: int = 8082, catalogue_interval: float = 10.0) -> int:
    """The web pages (Gov Hub; later the Citizen Hub) alone, for a ClickHouse server.

    The process has its own catalogue refresh, query engine and token verifier (an API app
    built here, which answers only ``/healthz``, ``/readyz`` and ``/metrics``: the API itself
    is ``urbanstack api``'s). It reads the Kubernetes API as the Gov Hub's own identity
    (``URBANSTACK_GOVHUB_KUBECONFIG``; in a pod its service account). With ``URBANSTACK_INGEST``
    on, the upload page imports through the ingest service's ``Uploads`` in this process (no
    push endpoints, no pull scheduler): it reads the municipality's ``urbanstack-ingest``
    Secret with the same identity and produces to Kafka as the municipality's own user."""
    from urbanstack.runtime.api import Catalogue

    if warehouse.is_embedded(settings.warehouse_url):
        raise SystemExit("error: 'urbanstack hub' needs a ClickHouse server URL in URBANSTACK_WAREHOUSE_URL; "
                         "with the embedded warehouse run 'urbanstack serve', which owns it and serves the "
                         "hubs too")
    client = warehouse.shared(settings.warehouse_url)
    identity = kubeclient.api_client(hub_kubeconfig(settings))
    stop = threading.Event()
    catalogue = Catalogue()
    threads = [threading.Thread(target=_catalogue_loop, args=(catalogue, settings, stop, catalogue_interval),
                                kwargs={"api_client": identity}, name="catalogue", daemon=True)]
    threads[0].start()
    extras: dict = {}
    ingest = None
    if settings.ingest:
        from urbanstack.runtime.ingest import service as ingest_service
        from urbanstack.runtime.ingest.tenants import KubernetesCredentials

        ingest = ingest_service.build(settings, catalogue, credentials=KubernetesCredentials(identity), pull=False,
                                      route_prefix="/v1")
        extras["ingest"] = ingest.uploads
    store = open_metadata_store(settings)
    app = hub_app(settings, catalogue, client, store, extras=extras, signup_follow_interval=SIGNUP_FOLLOW_SECONDS)
    try:
        http_server(app, settings, host, port).run()
    finally:
        stop.set()
        stop_web_app(app.web)
        if ingest is not None:
            ingest.publishers.close()
        store.close()
        for thread in threads:
            thread.join(5)
    return 0


# What the hub process answers from its own API app; everything else is the web app's.
HUB_API_PREFIXES = ("/healthz", "/readyz", "/metrics")


def hub_app(settings: Settings, catalogue, warehouse_client, store, *, extras: dict | None = None,
            signup_follow_interval: float = 0.0):
    """The ASGI app of ``urbanstack hub``: the web pages over an API app of its own (query
    engine, token verifier, health), of which only ``HUB_API_PREFIXES`` are served."""
    from urbanstack.runtime.api import create_app

    api = create_app(settings, catalogue, warehouse_client, keycloak_url=settings.keycloak_url,
                     audience="{tenant}-api")
    return PathDispatch(api, web_app(settings, catalogue, api, store, extras=extras,
                                     signup_follow_interval=signup_follow_interval), HUB_API_PREFIXES)


# Paths the Data Hub API answers; every other path belongs to the web pages (hubs).
API_PREFIXES = ("/api/", "/graphql", "/healthz", "/readyz", "/metrics", "/docs", "/redoc", "/openapi.json", "/ingest",
                "/v1.1", "/ogcapi")


class PathDispatch:
    """One origin for API and pages: API paths go to the API app (JSON errors), all others to
    the web app (HTML pages, static files). Both keep their full paths."""

    def __init__(self, api, web, api_prefixes: tuple[str, ...] = API_PREFIXES):
        self.api, self.web, self.api_prefixes = api, web, api_prefixes

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            return await self.api(scope, receive, send)
        path = scope.get("path", "")
        target = self.api if any(path == p.rstrip("/") or path.startswith(p) for p in self.api_prefixes) else self.web
        await target(scope, receive, send)


def open_metadata_store(settings: Settings):
    """The hubs' metadata store, migrated to the newest schema (by its owner role where one is set)."""
    from urbanstack.runtime.store import open_store, upgrade

    upgrade(settings.metadata_migration_url or settings.metadata_url)
    return open_store(settings.metadata_url)


def web_app(settings: Settings, catalogue, api_app, store, *, extras: dict | None = None,
            signup_follow_interval: float = 0.0):
    """The platform's web origin: the Gov Hub (and the published dashboards) over the API app's
    engine and token verifier, with the self-service signup (``/signup``) and the ops console
    (``/ops``) beside it, and the Citizen Hub everywhere else (``/``, ``/<slug>/…``, ``/catalog.ttl``).
    ``signup_follow_interval`` > 0 starts the thread that follows approved requests to Ready and
    sends the invitations (stop it with :func:`stop_web_app`)."""
    from urbanstack.runtime.hubs.citizen import add_citizen_hub
    from urbanstack.runtime.hubs.gov import create_gov_hub
    from urbanstack.runtime.web.oidc import Keycloak

    keycloak = Keycloak(settings.keycloak_url, api_app.state.verifier)
    extras = dict(extras or {})
    for name in ("meter", "billing"):   # the API's metering (docs/metering.md): the hubs' queries, the usage page
        if getattr(api_app.state, name, None) is not None:
            extras.setdefault(name, getattr(api_app.state, name))
    gov = create_gov_hub(settings, catalogue, api_app.state.engine, store, keycloak, extras=extras)
    add_citizen_hub(gov, settings, catalogue, api_app.state.engine, store,
                    quota=getattr(api_app.state, "quota", None))
    return WebDispatch(gov, signup_app(settings, store, follow_interval=signup_follow_interval,
                                       impact=getattr(api_app.state, "impact", None)))


def signup_kubeconfig(settings: Settings) -> str | None:
    """The signup's own identity: URBANSTACK_SIGNUP_KUBECONFIG when set (in a cluster the stack
    mounts one for the hub's pod, which runs as the Gov Hub's account); else None inside a cluster
    (the pod's service account) and the local platform's signup.kubeconfig outside."""
    if settings.signup_kubeconfig:
        return settings.signup_kubeconfig
    if kubeclient.in_cluster():
        return None
    return str(settings.state_dir / "kube" / "signup.kubeconfig")


def signup_app(settings: Settings, store, *, follow_interval: float = 0.0, impact=None):
    """``/signup`` and ``/ops`` with their dependencies from ``settings``. What is not configured
    is left out with a warning and the pages say so: no directory (the form says it is not
    available), no signup kubeconfig (approval answers "cluster not available"), no Gov Hub
    Keycloak identity (no invitations; the console shows why)."""
    from pathlib import Path

    from urbanstack.runtime.hubs.signup import create_signup_app
    from urbanstack.runtime.hubs.signup import directory as signup_directory
    from urbanstack.runtime.hubs.signup.ops_auth import OpsKeycloak
    from urbanstack.runtime.hubs.signup.service import Invitations, Kube
    from urbanstack.settings import MissingSetting

    try:
        directory = signup_directory.load(settings)
    except (OSError, ValueError) as error:
        log.warning("signup: the municipality directory cannot be read (%s); the form says it is unavailable",
                    str(error)[:200])
        directory = None
    if directory is None:
        log.warning("signup: URBANSTACK_MUNICIPALITY_DIRECTORY is not set; applicants cannot choose a municipality")
    kube = None
    kubeconfig = signup_kubeconfig(settings)
    if kubeconfig is None or Path(kubeconfig).exists():
        kube = Kube(kubeclient.api_client(kubeconfig))
    else:
        log.warning("signup: no kubeconfig at %s (URBANSTACK_SIGNUP_KUBECONFIG); requests cannot be approved",
                    kubeconfig)
    try:
        invitations = Invitations(settings.keycloak_url, *settings.gov_hub_keycloak())
    except MissingSetting as error:
        log.warning("signup: no invitations are sent: %s", error)
        invitations = None
    return create_signup_app(settings, store, directory=directory, kube=kube,
                             ops_keycloak=OpsKeycloak(settings.keycloak_url), invitations=invitations,
                             follow_interval=follow_interval, impact=impact)


def stop_web_app(app) -> None:
    """Stops the signup's follower thread of a :func:`web_app`, if it runs."""
    signup = getattr(app, "signup", None)
    stop = getattr(getattr(signup, "state", None), "signup_stop", None)
    if stop is not None:
        stop.set()


# Paths of the signup app in the web origin; every other path is the Gov Hub's.
SIGNUP_PREFIXES = ("/signup", "/ops")


class WebDispatch:
    """The web origin's pages: ``/signup…`` and ``/ops…`` to the signup app, the rest to the
    Gov Hub (which also serves ``/static``). ``state`` is the Gov Hub's (``state.hub``)."""

    def __init__(self, gov, signup):
        self.gov, self.signup = gov, signup

    @property
    def state(self):
        return self.gov.state

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            return await self.gov(scope, receive, send)
        path = scope.get("path", "")
        target = self.signup if any(path == p or path.startswith(p + "/") for p in SIGNUP_PREFIXES) else self.gov
        await target(scope, receive, send)


def http_server(app, settings: Settings, host: str, port: int):
    """The uvicorn server of every HTTP service. The client address is the peer's, or,
    when the peer is one of ``URBANSTACK_TRUSTED_PROXIES``, the one its X-Forwarded-For
    names (``urbanstack.proxies``), so per-address limits see the clients behind an
    ingress and nobody else can choose their own."""
    import uvicorn

    from urbanstack.proxies import ForwardedClient

    return uvicorn.Server(uvicorn.Config(ForwardedClient(app, settings.trusted_networks), host=host, port=port,
                                         log_level="info", proxy_headers=False))
