"""Renders the Jinja2 templates shipped in ``urbanstack.templates``.

Templates only place values; every decision is made in Python before rendering.
Values reach SQL through ``ident``/``literal`` and YAML through ``yaml``, so no
name or user-supplied string can change the statement or document around it.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

import jinja2
import yaml


def quote_identifier(name: str) -> str:
    """A ClickHouse identifier in backquotes, whatever characters it holds."""
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def quote_literal(value: str) -> str:
    """A ClickHouse string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def yaml_scalar(value: Any) -> str:
    # JSON is YAML: a JSON-encoded value cannot break out of its position.
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


class _PackageLoader(jinja2.BaseLoader):
    """Loads from the installed ``urbanstack.templates`` (no ``__init__.py``, so
    Jinja's own PackageLoader does not apply)."""

    def get_source(self, environment, template):
        path = resources.files("urbanstack.templates")
        for part in template.split("/"):  # one part at a time: namespace packages take no more
            path = path.joinpath(part)
        if not path.is_file():
            raise jinja2.TemplateNotFound(template)
        return path.read_text(encoding="utf-8"), None, lambda: True


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=_PackageLoader(), undefined=jinja2.StrictUndefined,
                             autoescape=False, keep_trailing_newline=False, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(ident=quote_identifier, literal=quote_literal, yaml=yaml_scalar)
    return env


def render(template: str, **values: Any) -> str:
    return environment().get_template(template).render(**values).strip()


# libyaml's parser where PyYAML was built with it (the wheels are): the same safe constructors, a
# tenth of the CPU. Planning a municipality renders its workloads from YAML templates, and the drift
# sweep plans every new generation; at 1,000 municipalities the pure-Python parser was most of the
# sweep's CPU during onboarding.
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def render_yaml(template: str, **values: Any) -> Any:
    return yaml.load(render(template, **values), Loader=_SAFE_LOADER)  # noqa: S506 - a safe loader
