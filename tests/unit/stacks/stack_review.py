"""An ops reviewer's checklist as functions: each returns the problems it finds.

They take plain manifests (dicts), so the tests can feed them both what the
stack declares (expecting no problems) and deliberately bad variants
(expecting the checker to object), which shows the checks can fail.
"""

from __future__ import annotations

import ast
import re

# Rights that let a holder take over the cluster or read what it should not.
DANGEROUS_RESOURCES = {"pods/exec", "pods/attach", "pods/portforward", "nodes", "nodes/proxy", "clusterroles",
                       "clusterrolebindings", "roles", "serviceaccounts/token",
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
        if _binds_named_roles_only(rule):
            # RBAC lets a holder bind only roles it holds itself or names with `bind`, so creating
            # RoleBindings plus `bind` on named ClusterRoles grants those roles and nothing more.
            continue
        for resource in set(rule.get("resources", [])) & DANGEROUS_RESOURCES:
            problems.append(f"{where}: grants {resource}")
        for verb in set(rule.get("verbs", [])) & DANGEROUS_VERBS:
            problems.append(f"{where}: verb {verb}")
    return problems


def _binds_named_roles_only(rule: dict) -> bool:
    return (rule.get("resources") == ["clusterroles"] and rule.get("verbs") == ["bind"]
            and bool(rule.get("resourceNames")) and "*" not in rule["resourceNames"])


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
        # Kubernetes refuses probes on init containers: they run to completion before the pod serves.
        for probe in ("livenessProbe", "readinessProbe") if container in pod_spec.get("containers", []) else ():
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


def single_owner_of_a_volume(deployment: dict) -> bool:
    """One replica that mounts a claim: a second pod during a rolling update could not mount a
    ReadWriteOnce volume on another node (and two brokers must not share one file), so Recreate
    is the only strategy that rolls. Everything else must roll without downtime."""
    pod = deployment["spec"]["template"]["spec"]
    return deployment["spec"].get("replicas") == 1 and any(
        "persistentVolumeClaim" in volume for volume in pod.get("volumes", []))


def rollout_problems(deployment: dict) -> list[str]:
    name = deployment["metadata"]["name"]
    strategy = deployment["spec"].get("strategy", {})
    if strategy.get("type") == "Recreate" and single_owner_of_a_volume(deployment):
        return []
    if strategy.get("type") != "RollingUpdate":
        return [f"{name}: strategy {strategy.get('type')!r}, not RollingUpdate"]
    rolling = strategy.get("rollingUpdate", {})
    problems = []
    if rolling.get("maxUnavailable") != 0:
        problems.append(f"{name}: maxUnavailable {rolling.get('maxUnavailable')!r} drops below the desired replicas")
    if not rolling.get("maxSurge"):
        problems.append(f"{name}: maxSurge 0 with maxUnavailable 0 can never roll")
    return problems


def secret_access_problems(rules: list[dict]) -> list[str]:
    """For an identity that may read named Secrets only: every Secret right must name them, and never list/watch."""
    problems = []
    for number, rule in enumerate(rules):
        if "secrets" not in rule.get("resources", []) and "*" not in rule.get("resources", []):
            continue
        where = f"rule {number}"
        if not rule.get("resourceNames"):
            problems.append(f"{where}: reaches every Secret (no resourceNames)")
        for verb in sorted(set(rule.get("verbs", [])) - {"get"}):
            problems.append(f"{where}: verb {verb} on Secrets")
    return problems


def service_account_problems(deployment: dict, service_account: str, token_needed: bool) -> list[str]:
    """The pod runs as ``service_account`` and mounts its API token exactly when it needs the API."""
    name = deployment["metadata"]["name"]
    pod = deployment["spec"]["template"]["spec"]
    problems = []
    if pod.get("serviceAccountName") != service_account:
        problems.append(f"{name}: runs as {pod.get('serviceAccountName')!r}, not {service_account}")
    # The ServiceAccounts of this stack mount nothing by default, so only an explicit true mounts.
    mounted = pod.get("automountServiceAccountToken") is True
    if mounted and not token_needed:
        problems.append(f"{name}: mounts an API token it does not use")
    if token_needed and not mounted:
        problems.append(f"{name}: reads the Kubernetes API but mounts no token")
    return problems


ENV_VARIABLE = re.compile(r"^URBANSTACK_[A-Z0-9_]+$")


def _is_environ_read(call: ast.Call) -> bool:
    """``os.environ.get(...)``, ``environ.get(...)``, ``os.getenv(...)``."""
    func = call.func
    if not isinstance(func, ast.Attribute):
        return False
    if func.attr == "getenv":
        return True
    target = func.value
    return func.attr == "get" and (
        (isinstance(target, ast.Attribute) and target.attr == "environ")
        or (isinstance(target, ast.Name) and target.id == "environ"))


def code_env_reads(paths) -> set[str]:
    """``URBANSTACK_*`` names the code reads from the environment, found in its syntax tree.

    A name counts where it is the first argument of an environment read, the key of
    ``os.environ[...]``, or the first argument of a module function that reads the
    environment with its first parameter (``_flag("URBANSTACK_INGEST_PULL", "1")``).
    Strings in help texts, docstrings or variables the code *writes* do not count."""
    found: set[str] = set()
    for path in paths:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        readers = set()
        for function in ast.walk(tree):
            if isinstance(function, ast.FunctionDef) and function.args.args:
                parameter = function.args.args[0].arg
                if any(isinstance(node, ast.Call) and _is_environ_read(node) and node.args
                       and isinstance(node.args[0], ast.Name) and node.args[0].id == parameter
                       for node in ast.walk(function)):
                    readers.add(function.name)
        for node in ast.walk(tree):
            key = None
            if isinstance(node, ast.Call) and node.args and (
                    _is_environ_read(node) or (isinstance(node.func, ast.Name) and node.func.id in readers)):
                key = node.args[0]
            elif (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute)
                  and node.value.attr == "environ" and isinstance(node.ctx, ast.Load)):
                key = node.slice
            if isinstance(key, ast.Constant) and isinstance(key.value, str) and ENV_VARIABLE.match(key.value):
                found.add(key.value)
    return found


def unread_env_problems(env: list[dict], read_by_code: set[str], workload: str) -> list[str]:
    """Variables the container sets that its code never reads (a typo, or a setting that does nothing)."""
    problems = []
    names = [variable["name"] for variable in env]
    for name in names:
        if name not in read_by_code:
            problems.append(f"{workload}: sets {name}, which its code does not read")
    for name in sorted({name for name in names if names.count(name) > 1}):
        problems.append(f"{workload}: sets {name} twice")
    return problems
