"""The Gov Hub's own Kubernetes identity and the two fields of a Municipality it owns.

The hub changes ``spec.tools`` and ``spec.shares`` of the signed-in gov-admin's
Municipality by server-side apply, as field manager ``urbanstack-gov-hub``, with the
least-privilege ClusterRole of ``operator/rbac.py`` (get/list/watch/patch municipalities,
get/list/watch citytools). Every apply sends *both* fields: a server-side apply removes
what its manager owned before and leaves out now, so sending only one would drop the other.

Both lists are atomic in the CRD: whoever applied a list last with a different value owns
all of it. When someone else (platform ops with ``kubectl apply``, a GitOps tool) also
manages one of them, the apply is refused with a conflict, and the hub says so instead of
forcing: forcing would take the field from them silently and their next apply would put
their value back just as silently. The object's resourceVersion travels with every apply,
so two admins changing the same municipality at once cannot overwrite each other either.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import kubernetes
from kubernetes.client.rest import ApiException

from urbanstack.operator import rbac
from urbanstack.operator.models import API_VERSION, GROUP, VERSION

PLURAL = "municipalities"
FIELD_MANAGER = rbac.GOV_HUB_FIELD_MANAGER
OWNED_FIELDS = ("tools", "shares")
_MANAGER = re.compile(r'conflict with "([^"]+)"')


class KubeError(RuntimeError):
    """The change could not be made; ``message`` is meant for the gov-admin (English msgid + values)."""

    def __init__(self, message: str, **values: Any):
        super().__init__(message % values if values else message)
        self.message, self.values = message, values


class FieldConflict(KubeError):
    """Another field manager owns a field the hub would change."""

    def __init__(self, managers: list[str], fields: list[str]):
        self.managers, self.fields = managers, fields
        super().__init__("%(fields)s of this municipality is also managed by %(managers)s (for example platform "
                         "operations applying the Municipality manifest). The hub does not overwrite their setting. "
                         "Ask them to remove %(fields)s from their manifest so that the Gov Hub manages it, "
                         "or to make this change there.",
                         fields=", ".join(fields) or "spec", managers=", ".join(f"'{m}'" for m in managers))


class StaleObject(KubeError):
    def __init__(self):
        super().__init__("Someone else changed this municipality in the meantime. Reload the page and try again.")


def kubeconfig_path(settings) -> str | None:
    """The hub's kubeconfig outside a cluster; None inside one (the pod's service account)."""
    from urbanstack import kubeclient

    if kubeclient.in_cluster():
        return None
    configured = getattr(settings, "govhub_kubeconfig", "") or ""
    return configured or str(settings.state_dir / "kube" / "govhub.kubeconfig")


STATUS_RETRIES = 2   # applies repeated on a fresh resourceVersion when only status or annotations moved


@dataclass
class GovKube:
    """Reads and server-side applies Municipality resources as the hub's identity."""

    api: kubernetes.client.ApiClient

    @classmethod
    def from_settings(cls, settings) -> "GovKube":
        from urbanstack import kubeclient

        return cls(kubeclient.api_client(kubeconfig_path(settings)))

    @property
    def custom(self) -> kubernetes.client.CustomObjectsApi:
        return kubernetes.client.CustomObjectsApi(self.api)

    def municipality(self, slug: str) -> dict | None:
        """The live resource (spec, status, metadata) or None if it does not exist."""
        try:
            return self.custom.get_cluster_custom_object(GROUP, VERSION, PLURAL, slug)
        except ApiException as error:
            if error.status == 404:
                return None
            raise KubeError("The platform's control plane could not be read (%(status)s). Try again in a moment.",
                            status=error.status) from None

    def apply(self, live: dict, *, tools: list[dict], shares: list[dict]) -> dict:
        """Server-side apply of spec.tools and spec.shares on the object as read in ``live``.

        The resourceVersion makes it a compare-and-set. The operator writes status and
        annotations all the time; those bump the resourceVersion but not metadata.generation.
        When only they moved (same generation: nobody changed the spec since the page read it),
        the apply is repeated on the fresh version instead of bothering the user with a conflict.
        """
        slug = live["metadata"]["name"]
        generation = live["metadata"].get("generation")
        version = live["metadata"]["resourceVersion"]
        for _ in range(STATUS_RETRIES):
            try:
                return self._apply(slug, version, tools, shares)
            except StaleObject:
                if generation is None:
                    raise
            fresh = self.municipality(slug)
            if fresh is None or fresh["metadata"].get("generation") != generation:
                raise StaleObject()
            version = fresh["metadata"]["resourceVersion"]
        return self._apply(slug, version, tools, shares)   # the last try: a conflict now reaches the user

    def _apply(self, slug: str, version: str, tools: list[dict], shares: list[dict]) -> dict:
        body = {"apiVersion": API_VERSION, "kind": "Municipality",
                "metadata": {"name": slug, "resourceVersion": version},
                "spec": {"tools": tools, "shares": shares}}
        try:
            return self.custom.patch_cluster_custom_object(
                GROUP, VERSION, PLURAL, slug, body, field_manager=FIELD_MANAGER,
                _content_type="application/apply-patch+yaml")
        except ApiException as error:
            raise _explain(error) from None


def _explain(error: ApiException) -> KubeError:
    try:
        status = json.loads(error.body or "{}")
    except ValueError:
        status = {}
    causes = (status.get("details") or {}).get("causes") or []
    conflicts = [cause for cause in causes if cause.get("reason") == "FieldManagerConflict"]
    if error.status == 409 and conflicts:
        managers = sorted({m for cause in conflicts for m in _MANAGER.findall(cause.get("message", ""))})
        fields = sorted({cause.get("field", "").lstrip(".") for cause in conflicts if cause.get("field")})
        return FieldConflict(managers, fields)
    if error.status == 409:
        return StaleObject()
    if error.status == 403:
        return KubeError("The Gov Hub is not allowed to change this municipality (its platform role is missing). "
                         "Ask platform operations.")
    if error.status == 404:
        return KubeError("This municipality no longer exists.")
    if error.status == 422:
        return KubeError("The platform refused the change: %(reason)s", reason=status.get("message", "invalid"))
    return KubeError("The platform's control plane did not accept the change (%(status)s). Try again in a moment.",
                     status=error.status)


def managers_of(live: dict, field: str) -> list[str]:
    """Field managers that own ``spec.<field>`` according to managedFields."""
    owners = []
    for entry in live.get("metadata", {}).get("managedFields") or []:
        spec = ((entry.get("fieldsV1") or {}).get("f:spec") or {})
        if f"f:{field}" in spec:
            owners.append(entry.get("manager", ""))
    return owners
