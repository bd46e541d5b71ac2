"""``urbanstack tool run``: a tool as a local process with the credentials its Deployment gets.

The local Kubernetes has no kubelet, so the operator's tool Deployment stays Pending. This
module does what the kubelet would do for its one container: read the Deployment the operator
created, resolve every environment variable (values as written, ``secretKeyRef`` from the
credentials Secret), write the settings ConfigMap to a private folder as the volume mount
would, and start ``python -m urbanstack.toolkit <module>`` with exactly that environment plus
what a Deployment cannot carry (the relay's user and password, a Kafka CA file; the
Deployment's own values win). Nothing else of the caller's credentials is passed on.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import kubernetes
from kubernetes.client.rest import ApiException

from urbanstack.operator import naming

from .context import ContextError

BUILTIN = {"pegel-warnung": "urbanstack.citytools.pegel_warnung"}
"""Tools whose code ships with the platform; any other tool names its module with ``--module``
or is found as ``<tool_with_underscores>.tool`` on the Python path (what ``tool new`` makes)."""

PASSED_ON = ("PATH", "HOME", "LANG", "PYTHONPATH", "LOG_LEVEL", "TZ")
PLATFORM_ENDPOINTS = ("URBANSTACK_KAFKA_SECURITY_PROTOCOL", "URBANSTACK_KAFKA_CA_FILE", "URBANSTACK_SMTP_HOST",
                      "URBANSTACK_SMTP_PORT", "URBANSTACK_SMTP_USER", "URBANSTACK_SMTP_PASSWORD",
                      "URBANSTACK_SMTP_FROM", "URBANSTACK_SMTP_STARTTLS", "URBANSTACK_TOOL_PORT")


def module_of(tool: str, module: str | None = None) -> str:
    return module or BUILTIN.get(tool) or f"{tool.replace('-', '_')}.tool"


def deployment_environment(api_client: kubernetes.client.ApiClient, municipality: str, tool: str,
                           settings_dir: Path) -> dict[str, str]:
    """The container environment of the operator's Deployment ``tool-<tool>`` in ``muni-<municipality>``."""
    namespace, name = naming.namespace(municipality), naming.tool_workload(tool)
    apps, core = kubernetes.client.AppsV1Api(api_client), kubernetes.client.CoreV1Api(api_client)
    try:
        deployment = apps.read_namespaced_deployment(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            raise ContextError(f"there is no Deployment {namespace}/{name}: is {tool!r} in spec.tools of "
                               f"municipality {municipality!r}, does the CityTool declare an image, and is the "
                               "municipality Ready?") from None
        raise ContextError(f"reading Deployment {namespace}/{name}: HTTP {exc.status} {exc.reason}") from None
    container = deployment.spec.template.spec.containers[0]
    secrets: dict[str, dict[str, str]] = {}
    env: dict[str, str] = {}
    for variable in container.env or []:
        if variable.value is not None:
            env[variable.name] = variable.value
            continue
        ref = variable.value_from.secret_key_ref if variable.value_from else None
        if ref is None:
            raise ContextError(f"{name}: variable {variable.name} has a source `tool run` cannot resolve")
        if ref.name not in secrets:
            try:
                secrets[ref.name] = core.read_namespaced_secret(ref.name, namespace).data or {}
            except ApiException as exc:
                raise ContextError(f"reading Secret {namespace}/{ref.name}: HTTP {exc.status} {exc.reason}") from None
        if ref.key not in secrets[ref.name]:
            raise ContextError(f"Secret {namespace}/{ref.name} has no key {ref.key!r} (for {variable.name}); "
                               "the operator writes it on its next reconcile")
        env[variable.name] = base64.b64decode(secrets[ref.name][ref.key]).decode()
    mounted = {mount.name: mount.mount_path for mount in container.volume_mounts or []}
    for volume in deployment.spec.template.spec.volumes or []:
        if volume.config_map is None:
            continue
        try:
            data = core.read_namespaced_config_map(volume.config_map.name, namespace).data or {}
        except ApiException as exc:
            raise ContextError(f"reading ConfigMap {namespace}/{volume.config_map.name}: HTTP {exc.status}") from None
        for key, value in data.items():
            (settings_dir / key).write_text(value, encoding="utf-8")
        mount_path = mounted.get(volume.name)
        for variable, value in list(env.items()):  # paths into the mount now point at the local copy
            if mount_path and value.startswith(mount_path.rstrip("/") + "/"):
                env[variable] = str(settings_dir / value[len(mount_path.rstrip("/")) + 1:])
    return env


def process_environment(deployment_env: dict[str, str], platform_bootstrap: str,
                        caller: dict[str, str] | None = None) -> dict[str, str]:
    caller = dict(os.environ if caller is None else caller)
    env = {key: caller[key] for key in PASSED_ON + PLATFORM_ENDPOINTS if key in caller}
    env["URBANSTACK_KAFKA_BOOTSTRAP"] = platform_bootstrap
    env.update(deployment_env)
    return env


def start(api_client: kubernetes.client.ApiClient, municipality: str, tool: str, *, bootstrap: str,
          module: str | None = None, caller_env: dict[str, str] | None = None,
          **popen) -> subprocess.Popen:
    """Start the tool process; its settings folder is removed when the process object is collected."""
    folder = tempfile.TemporaryDirectory(prefix=f"urbanstack-tool-{tool}-")
    os.chmod(folder.name, 0o700)
    env = process_environment(deployment_environment(api_client, municipality, tool, Path(folder.name)),
                              bootstrap, caller_env)
    process = subprocess.Popen([sys.executable, "-m", "urbanstack.toolkit", module_of(tool, module)], env=env,
                               **popen)
    process._settings_folder = folder  # type: ignore[attr-defined] - lives as long as the process object
    return process


def wait_healthy(process: subprocess.Popen, port: int, timeout: float = 90.0) -> None:
    """Until the tool answers 200 on ``/healthz``; ContextError if it exits or the time runs out."""
    import time

    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ContextError(f"the tool exited with status {process.returncode} before it was healthy")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise ContextError(f"the tool was not healthy on port {port} within {timeout:.0f} s")
