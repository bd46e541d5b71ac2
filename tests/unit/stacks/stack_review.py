"""An ops reviewer's checklist as functions: each returns the problems it finds.

They take plain manifests (dicts), so the tests can feed them both what the
stack declares (expecting no problems) and deliberately bad variants
(expecting the checker to object), which shows the checks can fail.
"""

from __future__ import annotations

import re

# Rights that let a holder take over the cluster or read what it should not.
DANGEROUS_RESOURCES = {"pods/exec", "pods/attach", "pods/portforward", "nodes", "nodes/proxy", "clusterroles",
                       "clusterrolebindings", "roles", "rolebindings", "serviceaccounts/token",
                       "certificatesigningrequests", "mutatingwebhookconfigurations",
                       "validatingwebhookconfigurations", "persistentvolumes"}
DANGEROUS_VERBS = {"*", "escalate", "bind", "impersonate"}
CREDENTIAL_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|CREDENTIAL|PRIVATE_KEY", re.IGNORECASE)
URL_WITH_USERINFO = re.compile(r"^[a-z][a-z0-9+.-]*://(?P<user>[^/@\s]+):(?P<password>[^/@\s]+)@", re.IGNORECASE)
# A password composed by the kubelet from a variable set by secretKeyRef.
VARIABLE_REFERENCE = re.compile(r"^\$\([A-Z0-9_]+\)$")
PINNED_IMAGE = re.compile(r"(@sha256:[0-9a-f]{64}|:v?\d+\.\d+(\.\d+)?\S*)$")


def rbac_problems(rules: list[dict]) -> list[str]:
    problems = []
    for number, rule in enumerate(rules):
        where = f"rule {number} ({','.join(rule.get('resources', []))})"
        for field in ("apiGroups", "resources", "verbs"):
            if "*" in rule.get(field, []):
                problems.append(f"{where}: wildcard in {field}")
        if rule.get("nonResourceURLs"):
            problems.append(f"{where}: nonResourceURLs")
        for resource in set(rule.get("resources", [])) & DANGEROUS_RESOURCES:
            problems.append(f"{where}: grants {resource}")
        for verb in set(rule.get("verbs", [])) & DANGEROUS_VERBS:
            problems.append(f"{where}: verb {verb}")
    return problems


def binding_problems(binding: dict, service_account: str, namespace: str) -> list[str]:
    allowed = {"kind": "ServiceAccount", "name": service_account, "namespace": namespace}
    return [f"binding {binding['metadata']['name']} to {subject}" for subject in binding.get("subjects", [])
            if subject != allowed]


def env_problems(env: list[dict], secret_values: list[str]) -> list[str]:
    problems = []
    for variable in env:
        value = variable.get("value")
        if value is None:
            if "secretKeyRef" not in variable.get("valueFrom", {}) and CREDENTIAL_NAME.search(variable["name"]):
                problems.append(f"{variable['name']}: a credential not taken from a Secret")
            continue
        if CREDENTIAL_NAME.search(variable["name"]):
            problems.append(f"{variable['name']}: credential as a plain value")
        userinfo = URL_WITH_USERINFO.search(value)
        if userinfo and not VARIABLE_REFERENCE.match(userinfo["password"]):
            problems.append(f"{variable['name']}: URL carries user:password")
        if any(secret in value for secret in secret_values):
            problems.append(f"{variable['name']}: holds a secret value")
    return problems


def container_problems(pod_spec: dict, workload: str) -> list[str]:
    problems = []
    pod_security = pod_spec.get("securityContext", {})
    for container in pod_spec.get("initContainers", []) + pod_spec.get("containers", []):
        where = f"{workload}/{container['name']}"
        resources = container.get("resources", {})
        for bound in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                if resource not in resources.get(bound, {}):
                    problems.append(f"{where}: no {resource} {bound}")
        for probe in ("livenessProbe", "readinessProbe"):
            if probe not in container:
                problems.append(f"{where}: no {probe}")
        security = container.get("securityContext", {})
        if not (security.get("runAsNonRoot") or pod_security.get("runAsNonRoot")):
            problems.append(f"{where}: may run as root")
        if security.get("runAsUser", pod_security.get("runAsUser")) in (0, None):
            problems.append(f"{where}: no numeric non-root user")
        if not security.get("readOnlyRootFilesystem"):
            problems.append(f"{where}: writable root filesystem")
        if security.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: privilege escalation allowed")
        if security.get("privileged"):
            problems.append(f"{where}: privileged")
        if "ALL" not in security.get("capabilities", {}).get("drop", []) or security.get("capabilities", {}).get("add"):
            problems.append(f"{where}: capabilities not dropped")
        seccomp = security.get("seccompProfile") or pod_security.get("seccompProfile") or {}
        if seccomp.get("type") != "RuntimeDefault":
            problems.append(f"{where}: no RuntimeDefault seccomp profile")
        if not PINNED_IMAGE.search(container.get("image", "")):
            problems.append(f"{where}: image {container.get('image')!r} not pinned")
    return problems


def rollout_problems(deployment: dict) -> list[str]:
    name = deployment["metadata"]["name"]
    strategy = deployment["spec"].get("strategy", {})
    if strategy.get("type") != "RollingUpdate":
        return [f"{name}: strategy {strategy.get('type')!r}, not RollingUpdate"]
    rolling = strategy.get("rollingUpdate", {})
    problems = []
    if rolling.get("maxUnavailable") != 0:
        problems.append(f"{name}: maxUnavailable {rolling.get('maxUnavailable')!r} drops below the desired replicas")
    if not rolling.get("maxSurge"):
        problems.append(f"{name}: maxSurge 0 with maxUnavailable 0 can never roll")
    return problems
