"""Kubernetes: the tenant's namespace and everything in it.

Objects are written with server-side apply under the operator's field manager,
so applying again is a no-op and anything changed behind our back is put back.
The tenant's credentials Secret is created once with generated values; a value is
never replaced (backends were given it), only a missing key gets a new one, which
the other provisioners then set in their backends.

Next to it lives the ingest Secret (``rbac.INGEST_SECRET``, the same name in every
tenant namespace, so the runtime identity can be allowed to read exactly that Secret
and no other): the tenant's webhook key (``<slug>.<random>``, for TTS/ChirpStack
webhooks that can only send static headers) and a copy of the tenant's Kafka user,
so the ingest service produces with the tenant's own, topic-limited credentials.
Keys the operator does not manage (pull-source API tokens) are left alone.
"""

from __future__ import annotations

import base64
import secrets as secrets_module
from collections.abc import Mapping

import urllib3
from kubernetes import client, dynamic
from kubernetes.client.rest import ApiException
from kubernetes.dynamic.exceptions import DynamicApiError

from urbanstack.operator.kubecache import KubeCache
from urbanstack.operator.plan import LABEL_MUNICIPALITY, KubeObject, RuntimePart
from urbanstack.operator.provisioners.base import BackendUnavailable, Diff, DiffBuilder, Difference, dispatch
from urbanstack.operator.rbac import INGEST_SECRET, await_tenant_access

BACKEND = "Kubernetes"
FIELD_MANAGER = "urbanstack-operator"
WEBHOOK_KEY = "webhook-key"
_INGEST_COPIED = ("kafka-username", "kafka-password")


def _subset(desired, live) -> bool:
    """True if every value set in ``desired`` is equal in ``live`` (server defaults ignored)."""
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(k in live and _subset(v, live[k]) for k, v in desired.items())
    if isinstance(desired, list):
        return isinstance(live, list) and len(desired) == len(live) and all(map(_subset, desired, live))
    return desired == live or str(desired) == str(live)


def _unavailable(exc: Exception) -> BackendUnavailable:
    status = getattr(exc, "status", None)
    return BackendUnavailable(BACKEND, f"HTTP {status}: {getattr(exc, 'reason', '')}" if status else str(exc)[:200])


class RuntimeProvisioner:
    name = BACKEND
    condition = "RuntimeReady"
    def __init__(self, api_client: client.ApiClient, cache: KubeCache | None = None):
        self._api_client = api_client
        self.cache = cache   # the drift sweep's watch cache (operator/kubecache.py), set while it runs
        self._dynamic: dynamic.DynamicClient | None = None

    @property
    def dynamic(self) -> dynamic.DynamicClient:
        if self._dynamic is None:
            try:
                self._dynamic = dynamic.DynamicClient(self._api_client)
            except (urllib3.exceptions.HTTPError, ApiException) as exc:
                raise _unavailable(exc) from None
        return self._dynamic

    def _resource(self, obj: KubeObject):
        return self.dynamic.resources.get(api_version=obj.api_version, kind=obj.kind)

    def _get(self, obj: KubeObject):
        try:
            return self._resource(obj).get(name=obj.name, namespace=obj.namespace).to_dict()
        except DynamicApiError as exc:
            if exc.status == 404:
                return None
            if exc.status >= 500 or exc.status == 429:
                raise _unavailable(exc) from None
            raise RuntimeError(f"reading {obj.kind} {obj.name}: HTTP {exc.status} {exc.reason}") from None
        except urllib3.exceptions.HTTPError as exc:
            raise _unavailable(exc) from None

    def observe(self, part: RuntimePart, credentials: Mapping[str, str]) -> Diff:
        """``credentials``: the values fixed by the plan (user names); the rest of the tenant
        Secret is generated once and kept."""
        found = DiffBuilder()
        if not self._compare_objects(found, part, self._get):
            return _all_after(found, part, found.items[-1].payload)
        current = self._read_secret(part)
        if current is None:
            found.add(f"Secret {part.secret.name}", "exists", True, False, "write_secret")
        else:
            wrong = sorted(key for key, value in _secret_values(part, credentials, current).items()
                           if current.get(key) != value)
            if wrong:
                found.add(f"Secret {part.secret.name}", "keys", "set", f"missing or changed: {', '.join(wrong)}",
                          "write_secret")
        ingest = self._read_named(part.namespace, INGEST_SECRET)
        if ingest is None:
            found.add(f"Secret {INGEST_SECRET}", "exists", True, False, "write_ingest_secret")
        elif current is None:
            found.add(f"Secret {INGEST_SECRET}", "Kafka user", "a copy of the new credentials", "a stale copy",
                      "write_ingest_secret")
        else:
            wanted = _ingest_values(part, _secret_values(part, credentials, current), ingest)
            wrong = sorted(key for key, value in wanted.items() if ingest.get(key) != value)
            if wrong:
                found.add(f"Secret {INGEST_SECRET}", "keys", "set", f"missing or changed: {', '.join(wrong)}",
                          "write_ingest_secret")
        return found.diff()

    @staticmethod
    def _compare_objects(found: DiffBuilder, part: RuntimePart, read) -> bool:
        """Each planned object as ``read(obj)`` finds it against the plan; False (and the missing
        object last in ``found``) when the namespace or the operator's RoleBinding is missing."""
        for obj in part.objects:
            live = read(obj)
            name = f"{obj.kind} {obj.name}"
            if live is None:
                found.add(name, "exists", True, False, "apply_object", obj)
                if obj.kind in ("Namespace", "RoleBinding"):
                    # The operator may read nothing else there before apply binds its role: everything
                    # else is applied (idempotent; the Secret writers keep the values they find).
                    return False
                continue
            sections = [s for s in ("spec", "data", "rules", "roleRef", "subjects") if s in obj.manifest
                        and not _subset(obj.manifest[s], live.get(s))]
            labels = obj.manifest.get("metadata", {}).get("labels", {})
            if not _subset(labels, live.get("metadata", {}).get("labels") or {}):
                sections.append("labels")
            if sections:
                found.add(name, ", ".join(sections), "as planned", "changed", "apply_object", obj)
        return True

    # bulk observe (the drift sweep) -------------------------------------------
    @property
    def reads_per_tenant(self) -> bool:
        """Whether ``observe_from`` still reads each namespace (no watch cache, or it is not synced)."""
        return self.cache is None or not self.cache.synced

    def snapshot(self, parts: list[RuntimePart]) -> "set[str] | KubeCache":
        """The watch cache while it is synced (nothing is read). Without it: the names of all
        namespaces, in one listing, and ``observe_from`` reads the objects inside them per
        municipality."""
        if self.cache is not None and self.cache.synced:
            return self.cache
        try:
            return {ns.metadata.name for ns in self._core().list_namespace().items}
        except ApiException as exc:
            raise _unavailable(exc) from None
        except urllib3.exceptions.HTTPError as exc:
            raise _unavailable(exc) from None

    def observe_from(self, snapshot: "set[str] | KubeCache", part: RuntimePart,
                     credentials: Mapping[str, str] | None = None) -> Diff:
        """From the watch cache: every planned object compared in memory; Secrets are not cached
        (the rotating audit reads them). From a namespace listing: a missing namespace, otherwise
        the per-municipality reads of ``observe`` (Secrets: every key present and the ingest copy
        current; the user names the plan fixes are compared by the full observe)."""
        if isinstance(snapshot, KubeCache):
            found = DiffBuilder()

            def cached(obj: KubeObject):
                if snapshot.covers(obj.api_version, obj.kind):
                    return snapshot.get(obj.api_version, obj.kind, obj.namespace, obj.name)
                return self._get(obj)

            self._compare_objects(found, part, cached)
            return found.diff()
        if part.namespace not in snapshot:
            found = DiffBuilder()
            found.add(f"Namespace {part.namespace}", "exists", True, False, "apply_object")
            return found.diff()
        return self.observe(part, credentials or {})

    def apply(self, part: RuntimePart, diff: Diff, credentials: Mapping[str, str]) -> list[str]:
        handlers = {"apply_object": self._apply_object, "write_secret": self._write_secret,
                    "write_ingest_secret": self._write_ingest_secret}
        return dispatch(BACKEND, handlers, diff, part, credentials)

    def _apply_object(self, difference: Difference, part: RuntimePart, credentials) -> str:
        obj: KubeObject = difference.payload
        try:
            self._resource(obj).server_side_apply(body=obj.manifest, name=obj.name, namespace=obj.namespace,
                                                  field_manager=FIELD_MANAGER, force_conflicts=True)
        except DynamicApiError as exc:
            if exc.status >= 500 or exc.status == 429:
                raise _unavailable(exc) from None
            raise RuntimeError(f"applying {obj.kind} {obj.name}: HTTP {exc.status} {_message(exc)}") from None
        except urllib3.exceptions.HTTPError as exc:
            raise _unavailable(exc) from None
        if obj.kind == "RoleBinding" and difference.attribute == "exists":
            await_tenant_access(self._api_client, obj.namespace)
        return f"{'created' if difference.attribute == 'exists' else 'repaired'} {obj.kind} {obj.name}"

    def read_credentials(self, part: RuntimePart) -> dict[str, str] | None:
        """The tenant Secret's values; None while it does not hold every key."""
        current = self._read_secret(part)
        if current is None or any(not current.get(key) for key in part.secret.keys):
            return None
        return current

    def _core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self._api_client)

    def _read_secret(self, part: RuntimePart) -> dict[str, str] | None:
        return self._read_named(part.secret.namespace, part.secret.name)

    def _read_named(self, namespace: str, name: str) -> dict[str, str] | None:
        try:
            secret = self._core().read_namespaced_secret(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise _unavailable(exc) from None
        except urllib3.exceptions.HTTPError as exc:
            raise _unavailable(exc) from None
        return {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}

    def _write_secret(self, difference: Difference, part: RuntimePart, credentials) -> str | None:
        current = self._read_secret(part)
        body = client.V1Secret(
            metadata=client.V1ObjectMeta(name=part.secret.name, namespace=part.secret.namespace,
                                         labels=dict(part.labels)),
            type="Opaque", string_data=_secret_values(part, credentials, current or {}))
        try:
            if current is None:
                self._core().create_namespaced_secret(part.secret.namespace, body)
                return f"created Secret {part.secret.name}"
            self._core().replace_namespaced_secret(part.secret.name, part.secret.namespace, body)
            return f"repaired Secret {part.secret.name}"
        except ApiException as exc:
            if exc.status == 409:  # written concurrently: the next observe compares what won
                return None
            raise _unavailable(exc) from None
        except urllib3.exceptions.HTTPError as exc:
            raise _unavailable(exc) from None

    def _write_ingest_secret(self, difference: Difference, part: RuntimePart, credentials) -> str | None:
        """A valid webhook key is kept; keys the operator does not manage are not touched."""
        tenant = self._read_secret(part) or {}
        current = self._read_named(part.namespace, INGEST_SECRET)
        wanted = _ingest_values(part, tenant, current or {})
        try:
            if current is None:
                self._core().create_namespaced_secret(part.namespace, client.V1Secret(
                    metadata=client.V1ObjectMeta(name=INGEST_SECRET, namespace=part.namespace,
                                                 labels=dict(part.labels)),
                    type="Opaque", string_data=wanted))
                return f"created Secret {INGEST_SECRET}"
            # A merge patch of stringData keeps keys the operator does not manage (source tokens).
            self._core().patch_namespaced_secret(INGEST_SECRET, part.namespace, {"stringData": wanted})
            return f"repaired Secret {INGEST_SECRET}"
        except ApiException as exc:
            if exc.status == 409:  # created concurrently; the next observe checks it
                return None
            raise _unavailable(exc) from None
        except urllib3.exceptions.HTTPError as exc:
            raise _unavailable(exc) from None

    def delete(self, part: RuntimePart, *, keep_data: bool) -> list[str]:
        """Delete the namespace whatever ``keep_data`` says: it holds access (credentials, tool
        workloads), never data."""
        try:
            self._core().delete_namespace(part.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return []
            raise _unavailable(exc) from None
        except urllib3.exceptions.HTTPError as exc:
            raise _unavailable(exc) from None
        return [f"deleted namespace {part.namespace}"]


def _all_after(found: DiffBuilder, part: RuntimePart, missing: KubeObject) -> Diff:
    """The diff when ``missing`` (the namespace or the operator's RoleBinding in it) is absent:
    every later object and both Secrets are written, none of them can be read yet."""
    for obj in part.objects[part.objects.index(missing) + 1:]:
        found.add(f"{obj.kind} {obj.name}", "exists", True, "not readable yet", "apply_object", obj)
    found.add(f"Secret {part.secret.name}", "exists", True, "not readable yet", "write_secret")
    found.add(f"Secret {INGEST_SECRET}", "exists", True, "not readable yet", "write_ingest_secret")
    return found.diff()


def _secret_values(part: RuntimePart, fixed: Mapping[str, str], current: Mapping[str, str]) -> dict[str, str]:
    """The tenant Secret: the plan's fixed values, else what it holds, else a new random value."""
    return {key: fixed.get(key) or current.get(key) or secrets_module.token_urlsafe(24) for key in part.secret.keys}


def _ingest_values(part: RuntimePart, credentials: Mapping[str, str], current: Mapping[str, str]) -> dict[str, str]:
    """What the ingest Secret must hold: the kept or a new webhook key, and the tenant's Kafka user."""
    slug = part.labels[LABEL_MUNICIPALITY]  # a slug is a valid label value, never shortened
    key = current.get(WEBHOOK_KEY) or ""
    prefix, _, secret = key.partition(".")
    if prefix != slug or len(secret) < 32:
        key = f"{slug}.{secrets_module.token_urlsafe(32)}"
    return {WEBHOOK_KEY: key, **{name: credentials.get(name, "") for name in _INGEST_COPIED}}


def _message(exc: DynamicApiError) -> str:
    try:
        import json

        return json.loads(exc.body).get("message", "")[:300]
    except (ValueError, TypeError, AttributeError):
        return str(exc.reason)
