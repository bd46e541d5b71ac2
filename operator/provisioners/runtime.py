"""Kubernetes: the tenant's namespace and everything in it.

Objects are written with server-side apply under the operator's field manager,
so applying again is a no-op and anything changed behind our back is put back.
The tenant's credentials Secret is created once with generated values and never
rewritten: backends were given those values.

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

import urllib3
from kubernetes import client, dynamic
from kubernetes.client.rest import ApiException
from kubernetes.dynamic.exceptions import DynamicApiError

from urbanstack.operator.plan import LABEL_MUNICIPALITY, KubeObject, RuntimePart
from urbanstack.operator.provisioners.base import BackendUnavailable, Observed
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

    def __init__(self, api_client: client.ApiClient):
        self._api_client = api_client
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

    def observe(self, part: RuntimePart) -> Observed:
        observed = Observed()
        for obj in part.objects:
            live = self._get(obj)
            if live is None:
                observed.missing.append(f"{obj.kind} {obj.name}")
                if obj.kind in ("Namespace", "RoleBinding"):
                    return observed  # the operator may read nothing else there before apply binds its role
                continue
            for section in ("spec", "data", "rules", "roleRef", "subjects"):
                if section in obj.manifest and not _subset(obj.manifest[section], live.get(section)):
                    observed.drifted.append(f"{obj.kind} {obj.name}")
                    break
            else:
                labels = obj.manifest.get("metadata", {}).get("labels", {})
                if not _subset(labels, live.get("metadata", {}).get("labels") or {}):
                    observed.drifted.append(f"{obj.kind} {obj.name} labels")
        credentials = self._read_secret(part)
        if credentials is None:
            observed.missing.append(f"Secret {part.secret.name}")
        ingest = self._read_named(part.namespace, INGEST_SECRET)
        if ingest is None:
            observed.missing.append(f"Secret {INGEST_SECRET}")
        elif credentials is not None and _ingest_values(part, credentials, ingest) != {
                key: ingest.get(key) for key in (WEBHOOK_KEY, *_INGEST_COPIED)}:
            observed.drifted.append(f"Secret {INGEST_SECRET}")
        return observed

    def apply(self, part: RuntimePart, fixed_values: dict[str, str]) -> tuple[list[str], dict[str, str]]:
        """Apply every object; return the actions and the tenant's credentials."""
        actions = []
        for obj in part.objects:
            existed = self._get(obj) is not None
            try:
                self._resource(obj).server_side_apply(body=obj.manifest, name=obj.name, namespace=obj.namespace,
                                                      field_manager=FIELD_MANAGER, force_conflicts=True)
            except DynamicApiError as exc:
                if exc.status >= 500 or exc.status == 429:
                    raise _unavailable(exc) from None
                raise RuntimeError(f"applying {obj.kind} {obj.name}: HTTP {exc.status} {_message(exc)}") from None
            except urllib3.exceptions.HTTPError as exc:
                raise _unavailable(exc) from None
            if not existed:
                actions.append(f"created {obj.kind} {obj.name}")
                if obj.kind == "RoleBinding":
                    await_tenant_access(self._api_client, obj.namespace)
        credentials, created = self._ensure_secret(part, fixed_values)
        if created:
            actions.append(f"created Secret {part.secret.name}")
        ingest_action = self._ensure_ingest_secret(part, credentials)
        if ingest_action:
            actions.append(ingest_action)
        return actions, credentials

    def credentials(self, part: RuntimePart, fixed_values: dict[str, str]) -> dict[str, str]:
        """The tenant's credentials (the Secret is created if it is missing), without
        re-applying the namespace's objects."""
        return self._ensure_secret(part, fixed_values)[0]

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

    def _ensure_secret(self, part: RuntimePart, fixed_values: dict[str, str]) -> tuple[dict[str, str], bool]:
        current = self._read_secret(part)
        wanted = {key: fixed_values.get(key) or (current or {}).get(key) or secrets_module.token_urlsafe(24)
                  for key in part.secret.keys}
        if current is not None and all(current.get(k) == v for k, v in wanted.items()):
            return wanted, False
        body = client.V1Secret(
            metadata=client.V1ObjectMeta(name=part.secret.name, namespace=part.secret.namespace,
                                         labels=dict(part.labels)),
            type="Opaque", string_data=wanted)
        try:
            if current is None:
                self._core().create_namespaced_secret(part.secret.namespace, body)
            else:
                self._core().replace_namespaced_secret(part.secret.name, part.secret.namespace, body)
        except ApiException as exc:
            if exc.status == 409:  # created concurrently: read what won
                return self._read_secret(part) or wanted, False
            raise _unavailable(exc) from None
        return wanted, current is None

    def _ensure_ingest_secret(self, part: RuntimePart, credentials: dict[str, str]) -> str | None:
        """Create or repair the ingest Secret; a valid webhook key is kept, other keys are not touched."""
        current = self._read_named(part.namespace, INGEST_SECRET)
        wanted = _ingest_values(part, credentials, current or {})
        if current is not None and all(current.get(k) == v for k, v in wanted.items()):
            return None
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
            if exc.status == 409:  # created concurrently; the next reconcile checks it
                return None
            raise _unavailable(exc) from None
        except urllib3.exceptions.HTTPError as exc:
            raise _unavailable(exc) from None

    def delete(self, part: RuntimePart) -> list[str]:
        """Delete the namespace; it holds access (credentials, tool workloads), never data."""
        try:
            self._core().delete_namespace(part.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return []
            raise _unavailable(exc) from None
        except urllib3.exceptions.HTTPError as exc:
            raise _unavailable(exc) from None
        return [f"deleted namespace {part.namespace}"]


def _ingest_values(part: RuntimePart, credentials: dict[str, str], current: dict[str, str]) -> dict[str, str]:
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
