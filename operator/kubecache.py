"""A watch-fed cache of the operator's own Kubernetes objects, for the drift sweep.

Before, the sweep read ~13 objects of every tenant namespace on every interval (~17 ms CPU per
tenant, docs/scale.md). This cache lists each kind the plan creates once, cluster-wide and only
objects carrying the operator's ``managed-by`` label, then follows a watch from the listing's
``resourceVersion``; the sweep compares each tenant's plan with what the cache holds, in memory.

- A watch ends after ``WATCH_SECONDS`` (server side) and is resumed from the last version seen,
  so a dead connection is noticed within ``WATCH_SECONDS + READ_SLACK`` at the latest; a broken
  one is retried with backoff (1 s doubling to 30 s). A ``410 Gone`` (the version is older than
  the API server's window) re-lists the kind. While a kind is not watched, ``synced`` is False
  and the sweep reads per tenant, as before.
- Every change after the first listing is reported to the ``listeners`` with the namespace it
  happened in, so a deleted or changed object can be repaired at once instead of at the next
  sweep (operator/sweep.py).
- Secrets are not cached (the operator may not list them cluster-wide); the sweep's rotating
  audit reads them (docs/scale.md).

The operator's ClusterRole ``urbanstack-operator-watch`` grants ``list`` and ``watch`` on exactly
these kinds (operator/rbac.py, ``WATCH_RULES``); RBAC cannot restrict a listing by label, so the label
selector limits what is held in memory, not what could be read.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import kubernetes
import urllib3
from kubernetes.client.rest import ApiException

from urbanstack.operator.plan import LABEL_MANAGED_BY, MANAGED_BY

log = logging.getLogger("urbanstack.operator.kubecache")

WATCH_SECONDS = 45          # a watch request ends after this (jittered), then resumes from its version
READ_SLACK = 15             # a connection silent this much longer is taken as dead
LIST_PAGE = 500
BACKOFF_MAX = 30.0


@dataclass(frozen=True)
class WatchedKind:
    api_version: str
    kind: str
    path: str      # the cluster-wide collection

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def resource(self) -> str:
        return self.path.rsplit("/", 1)[1]


# Every kind the plan creates (operator/plan.py), Secrets excepted.
KINDS: tuple[WatchedKind, ...] = (
    WatchedKind("v1", "Namespace", "/api/v1/namespaces"),
    WatchedKind("rbac.authorization.k8s.io/v1", "RoleBinding", "/apis/rbac.authorization.k8s.io/v1/rolebindings"),
    WatchedKind("v1", "ResourceQuota", "/api/v1/resourcequotas"),
    WatchedKind("v1", "LimitRange", "/api/v1/limitranges"),
    WatchedKind("networking.k8s.io/v1", "NetworkPolicy", "/apis/networking.k8s.io/v1/networkpolicies"),
    WatchedKind("v1", "ConfigMap", "/api/v1/configmaps"),
    WatchedKind("v1", "Service", "/api/v1/services"),
    WatchedKind("apps/v1", "Deployment", "/apis/apps/v1/deployments"),
)

Key = tuple[str, str]   # (namespace, name); a Namespace has namespace ""


class _Gone(Exception):
    """The watch's version is older than the API server keeps: list again."""


class KubeCache:
    def __init__(self, api_client: kubernetes.client.ApiClient, kinds: tuple[WatchedKind, ...] = KINDS,
                 label_selector: str = f"{LABEL_MANAGED_BY}={MANAGED_BY}"):
        # A client of its own: the long-lived watches must not hold the operator's connection pool.
        self._api = kubernetes.client.ApiClient(api_client.configuration)
        self.kinds = {(k.api_version, k.kind): k for k in kinds}
        self.label_selector = label_selector
        self.listeners: list[Callable[[str], None]] = []
        self._objects: dict[tuple[str, str], dict[Key, dict]] = {key: {} for key in self.kinds}
        self._synced: dict[tuple[str, str], bool] = {key: False for key in self.kinds}
        self._listed: set[tuple[str, str]] = set()
        self._responses: dict[tuple[str, str], urllib3.response.HTTPResponse] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.relists = 0
        self.reconnects = 0
        self.events = 0

    # reading ----------------------------------------------------------------------------------
    def covers(self, api_version: str, kind: str) -> bool:
        return (api_version, kind) in self.kinds

    @property
    def synced(self) -> bool:
        with self._lock:
            return all(self._synced.values())

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict | None:
        with self._lock:
            return self._objects[(api_version, kind)].get((namespace or "", name))

    def wait_synced(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.synced:
            if time.monotonic() > deadline or self._stop.is_set():
                return False
            time.sleep(0.05)
        return True

    # running ----------------------------------------------------------------------------------
    def start(self) -> "KubeCache":
        self._stop.clear()
        for key, kind in self.kinds.items():
            thread = threading.Thread(target=self._follow, args=(key, kind), name=f"kube-watch-{kind.resource}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        with self._lock:
            responses = list(self._responses.values())
        for response in responses:   # unblocks a thread waiting in a read
            _close(response)
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []

    def _follow(self, key: tuple[str, str], kind: WatchedKind) -> None:
        backoff = 1.0
        version = None
        while not self._stop.is_set():
            try:
                if version is None:
                    version = self._list(key, kind)
                version = self._watch(key, kind, version)
                backoff = 1.0
            except _Gone:
                log.info("watch of %s: version too old, listing again", kind.resource)
                version = None
            except Exception as error:  # noqa: BLE001 - the watch must outlive any failure: retried
                if self._stop.is_set():
                    return
                with self._lock:
                    self._synced[key] = False
                self.reconnects += 1
                if isinstance(error, ApiException) and error.status in (401, 403):
                    version = None   # rights may come back (RBAC re-applied): list from scratch
                log.warning("watch of %s failed (%s); retrying in %.0f s", kind.resource,
                            f"HTTP {error.status}" if isinstance(error, ApiException) else str(error)[:200], backoff)
                self._stop.wait(backoff * random.uniform(0.8, 1.2))
                backoff = min(backoff * 2, BACKOFF_MAX)

    def _request(self, key, kind: WatchedKind, query: list[tuple[str, str]], read_timeout: float):
        """The open, unread response (a watch streams for minutes); an error status raises."""
        method, url, headers, _body, _post = self._api.param_serialize(
            "GET", kind.path, query_params=[("labelSelector", self.label_selector), *query],
            header_params={"Accept": "application/json"}, auth_settings=["BearerToken"])
        response = self._api.call_api(method, url, header_params=headers,
                                      _request_timeout=(10, read_timeout)).response
        if not 200 <= response.status < 300:
            error = ApiException(http_resp=response)
            _close(response)
            raise error
        with self._lock:
            self._responses[key] = response
        return response

    def _list(self, key, kind: WatchedKind) -> str:
        """All labelled objects of the kind, page by page; the version to watch from."""
        objects: dict[Key, dict] = {}
        token = ""
        while True:
            query = [("limit", str(LIST_PAGE))] + ([("continue", token)] if token else [])
            response = self._request(key, kind, query, read_timeout=60)
            try:
                page = json.loads(response.data)
            finally:
                _close(response)
            for item in page.get("items") or []:
                objects[_key(item)] = _slim(item)
            token = (page.get("metadata") or {}).get("continue") or ""
            if not token:
                break
        with self._lock:
            before = self._objects[key]
            self._objects[key] = objects
            self._synced[key] = True
            again = key in self._listed
            self._listed.add(key)
        self.relists += 1
        if again:   # what changed while the kind was not watched is reported like any other change
            changed = {name for name, item in objects.items()
                       if (before.get(name) or {}).get("metadata", {}).get("resourceVersion")
                       != item["metadata"].get("resourceVersion")}
            self._notify({_namespace_of(kind, name) for name in changed | (before.keys() - objects.keys())})
        return page["metadata"]["resourceVersion"]

    def _watch(self, key, kind: WatchedKind, version: str) -> str:
        """Follow changes from ``version`` until the server ends the watch; the last version seen."""
        seconds = int(WATCH_SECONDS * random.uniform(0.8, 1.2))
        response = self._request(key, kind, [("watch", "true"), ("resourceVersion", version),
                                             ("allowWatchBookmarks", "true"), ("timeoutSeconds", str(seconds))],
                                 read_timeout=seconds + READ_SLACK)
        with self._lock:
            self._synced[key] = True
        try:
            for line in _lines(response):
                event = json.loads(line)
                kind_of_event, item = event.get("type"), event.get("object") or {}
                if kind_of_event == "ERROR":
                    if item.get("code") == 410:
                        raise _Gone()
                    raise ValueError(f"watch error: {item.get('message', '')[:200]}")
                version = item.get("metadata", {}).get("resourceVersion") or version
                if kind_of_event == "BOOKMARK":
                    continue
                name = _key(item)
                with self._lock:
                    if kind_of_event == "DELETED":
                        self._objects[key].pop(name, None)
                    else:
                        self._objects[key][name] = _slim(item)
                self.events += 1
                self._notify({_namespace_of(kind, name)})
        finally:
            _close(response)
        if self._stop.is_set():
            raise OSError("stopped")
        return version

    def _notify(self, namespaces: set[str]) -> None:
        for namespace in namespaces:
            for listener in list(self.listeners):
                try:
                    listener(namespace)
                except Exception:  # noqa: BLE001 - a listener's bug must not stop the watch
                    log.exception("kube cache listener failed")


def _key(item: dict) -> Key:
    meta = item.get("metadata") or {}
    return meta.get("namespace") or "", meta.get("name", "")


def _namespace_of(kind: WatchedKind, key: Key) -> str:
    return key[1] if kind.kind == "Namespace" else key[0]


def _slim(item: dict) -> dict:
    """What the comparison needs; managedFields are most of an object's size."""
    meta = item.get("metadata") or {}
    meta.pop("managedFields", None)
    return item


def _lines(response):
    """The watch stream, one JSON event a line."""
    pending = b""
    for chunk in response.stream(amt=None, decode_content=False):
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            if line.strip():
                yield line
    if pending.strip():
        yield pending


def _close(response) -> None:
    try:
        response.close()
        response.release_conn()
    except Exception:  # noqa: BLE001 - closing what may already be broken
        pass
