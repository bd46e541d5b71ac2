"""A City Tool's tenant context, built from exactly what the operator gives its Deployment.

The operator (``operator/plan.py``, ``_tool_workload``) hands every tool Deployment:

- environment values ``URBANSTACK_MUNICIPALITY``, ``URBANSTACK_AGS``, ``URBANSTACK_TOOL``,
  ``URBANSTACK_CLIENT_ID`` and ``URBANSTACK_TOOL_SETTINGS`` (the path of ``settings.json``);
- Secret references from ``<slug>-credentials``: ``URBANSTACK_CLIENT_SECRET``
  (key ``tool-<tool>-client-secret``), ``URBANSTACK_KAFKA_USERNAME`` and
  ``URBANSTACK_KAFKA_PASSWORD`` (keys ``kafka-username``/``kafka-password``);
- the ConfigMap ``tool-<tool>-settings`` mounted read-only at ``/etc/urbanstack/tool``
  (one key, ``settings.json``: the municipality's ``spec.tools[].settings`` for the tool).

Every secret variable may instead be given as ``<NAME>_FILE``, the path of a file holding
it (a Secret mounted as a volume). Platform endpoints (Kafka bootstrap and security, SMTP
relay) come from the same ``URBANSTACK_*`` variables every platform service reads
(:class:`urbanstack.settings.Settings`).

Secrets are held privately and never appear in ``repr``, logs or error messages.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from urbanstack.operator import naming
from urbanstack.settings import Settings

SETTINGS_PATH_DEFAULT = "/etc/urbanstack/tool/settings.json"
MAX_SETTINGS_BYTES = 256 * 1024
REQUIRED = ("URBANSTACK_MUNICIPALITY", "URBANSTACK_TOOL", "URBANSTACK_CLIENT_ID")
SECRETS = ("URBANSTACK_CLIENT_SECRET", "URBANSTACK_KAFKA_USERNAME", "URBANSTACK_KAFKA_PASSWORD")


class ContextError(RuntimeError):
    """The tool's environment is incomplete or malformed; the message names what to fix (never a secret)."""


@dataclass(frozen=True)
class ToolContext:
    municipality: str
    ags: str
    tool: str
    client_id: str
    settings: Mapping[str, Any]
    platform: Settings
    kafka_username: str
    port: int = 8080
    _secrets: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    # Building ------------------------------------------------------------------
    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> "ToolContext":
        env = dict(os.environ if environ is None else environ)
        missing = [name for name in REQUIRED if not env.get(name)]
        secrets = {}
        for name in SECRETS:
            value = _secret(env, name)
            if not value:
                missing.append(f"{name} (or {name}_FILE)")
            secrets[name] = value
        if missing:
            raise ContextError("the tool's environment lacks " + ", ".join(missing) + "; the operator sets these "
                               "in the tool's Deployment, `urbanstack tool run` reads them from the same "
                               "Secret and ConfigMap")
        slug, tool = env["URBANSTACK_MUNICIPALITY"], env["URBANSTACK_TOOL"]
        for what, value in (("URBANSTACK_MUNICIPALITY", slug), ("URBANSTACK_TOOL", tool)):
            if not naming.is_slug(value):
                raise ContextError(f"{what} must be a slug (lowercase letters, digits, '-'), got {value!r}")
        if env["URBANSTACK_CLIENT_ID"] != naming.tool_client(slug, tool):
            raise ContextError(f"URBANSTACK_CLIENT_ID {env['URBANSTACK_CLIENT_ID']!r} is not the client of tool "
                               f"{tool!r} in {slug!r} (expected {naming.tool_client(slug, tool)!r})")
        if secrets["URBANSTACK_KAFKA_USERNAME"] != naming.kafka_user(slug):
            raise ContextError(f"URBANSTACK_KAFKA_USERNAME is not the Kafka user of {slug!r}")
        settings = load_settings(env.get("URBANSTACK_TOOL_SETTINGS") or SETTINGS_PATH_DEFAULT)
        try:
            port = int(env.get("URBANSTACK_TOOL_PORT", "8080"))
        except ValueError:
            raise ContextError(f"URBANSTACK_TOOL_PORT must be a port number, got {env['URBANSTACK_TOOL_PORT']!r}")
        platform_env = {k: v for k, v in env.items() if k.startswith("URBANSTACK_")}
        return cls(municipality=slug, ags=env.get("URBANSTACK_AGS", ""), tool=tool,
                   client_id=env["URBANSTACK_CLIENT_ID"], settings=settings,
                   platform=Settings.from_env(platform_env), kafka_username=secrets["URBANSTACK_KAFKA_USERNAME"],
                   port=port, _secrets=secrets)

    # Names -----------------------------------------------------------------------
    @property
    def topic_prefix(self) -> str:
        return naming.topic_prefix(self.municipality)

    def topic(self, dataset: str, owner: str | None = None) -> str:
        """``<owner>.<tool>.<dataset>``; ``owner`` defaults to the tool's own municipality."""
        return naming.topic(owner or self.municipality, self.tool, dataset)

    def group(self, name: str = "main") -> str:
        """A consumer group inside the tenant's prefix (the only groups its ACLs allow)."""
        return f"{self.topic_prefix}{self.tool}.{name}"

    # Credentials ---------------------------------------------------------------------
    def kafka_config(self) -> dict[str, str]:
        return self.platform.kafka_config(self.kafka_username, self._secrets["URBANSTACK_KAFKA_PASSWORD"])

    @property
    def client_secret(self) -> str:
        return self._secrets["URBANSTACK_CLIENT_SECRET"]

    def redact(self, text: str) -> str:
        """``text`` with every secret of the context replaced by ``***``."""
        for value in self._secrets.values():
            if value and len(value) >= 4:
                text = text.replace(value, "***")
        return text

    def setting(self, name: str, default: Any = None) -> Any:
        return self.settings.get(name, default)


def _secret(env: Mapping[str, str], name: str) -> str:
    if env.get(name):
        return env[name]
    path = env.get(f"{name}_FILE")
    if not path:
        return ""
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ContextError(f"{name}_FILE {path!r} cannot be read: {exc.strerror}") from None


def load_settings(path: str) -> dict[str, Any]:
    """The tool's settings (the mounted ConfigMap key ``settings.json``); missing file: ``{}``."""
    file = Path(path)
    if not file.exists():
        return {}
    try:
        if file.stat().st_size > MAX_SETTINGS_BYTES:
            raise ContextError(f"settings file {path} is larger than {MAX_SETTINGS_BYTES} bytes")
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ContextError(f"settings file {path} is not readable JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ContextError(f"settings file {path} must hold a JSON object, got {type(data).__name__}")
    return data
