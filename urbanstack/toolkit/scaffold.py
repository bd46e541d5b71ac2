"""``urbanstack tool new NAME``: a City Tool to start from (manifest, package, tests, Dockerfile)."""

from __future__ import annotations

from pathlib import Path

from urbanstack.operator import naming
from urbanstack.operator.templating import render

from .context import ContextError

FILES = {
    "citytool.yaml": "tool/citytool.yaml.j2",
    "{package}/__init__.py": None,
    "{package}/tool.py": "tool/tool.py.j2",
    "tests/test_tool.py": "tool/test_tool.py.j2",
    "Dockerfile": "tool/Dockerfile.j2",
    "pyproject.toml": "tool/pyproject.toml.j2",
    "README.md": "tool/README.md.j2",
}


def new(name: str, target: Path, *, owner: str, registry: str = "ghcr.io/urbanstack") -> list[Path]:
    """Write the scaffold of tool ``name`` into ``target`` (which must not exist yet)."""
    if not naming.is_slug(name):
        raise ContextError(f"tool name {name!r} must be a slug: lowercase letters, digits and '-', "
                           "starting with a letter (it becomes topic, client and Deployment names)")
    if not naming.is_slug(owner):
        raise ContextError(f"--owner {owner!r} must be the slug of the municipality that builds the tool")
    if target.exists():
        raise ContextError(f"{target} exists already; choose another --dir or remove it")
    package = name.replace("-", "_")
    values = {"name": name, "package": package, "owner": owner,
              "display_name": name.replace("-", " ").title(), "description": f"{name}: a City Tool.",
              "description_de": f"{name}: ein City Tool.",
              "image": f"{registry.rstrip('/')}/{name}:0.1.0"}
    written = []
    for relative, template in FILES.items():
        path = target / relative.format(package=package)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render(template, **values) + "\n" if template else "", encoding="utf-8")
        written.append(path)
    return written
