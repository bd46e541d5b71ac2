"""Maps the repository's top-level rooms onto subpackages of ``urbanstack``
(metadata lives in pyproject.toml). Every folder below a room that holds Python
files or templates becomes a package of the wheel."""

from pathlib import Path

from setuptools import setup

ROOMS = {
    "urbanstack": "urbanstack",
    "urbanstack.operator": "operator",
    "urbanstack.runtime": "runtime",
    "urbanstack.stacks": "stacks",
    "urbanstack.templates": "templates",
}

# Folders that are never Python packages: caches, and the front end's npm tree
# (runtime/web/frontend/node_modules; only its build output in static/dist ships).
SKIP = {"__pycache__", "node_modules"}


def _packages():
    packages, package_dir = [], {}
    for name, folder in ROOMS.items():
        root = Path(folder)
        if not root.is_dir():
            continue
        package_dir[name] = folder
        for path in sorted([root, *[p for p in root.rglob("*") if p.is_dir()]]):
            if SKIP.intersection(path.parts) or not any(path.iterdir()):
                continue
            packages.append(".".join([name, *path.relative_to(root).parts]))
    return packages, package_dir


PACKAGES, PACKAGE_DIR = _packages()
setup(packages=PACKAGES, package_dir=PACKAGE_DIR,
      package_data={"urbanstack.templates": ["**/*"], "urbanstack.stacks": ["**/*.yaml"],
                    "urbanstack.runtime.store.migrations": ["script.py.mako"],
                    "urbanstack.runtime.web.static": ["**/*"], "urbanstack.runtime.web.templates": ["**/*"],
                    "urbanstack.runtime.web.locale": ["**/*"], "urbanstack.runtime.hubs.gov.templates": ["**/*"],
                    "urbanstack.runtime.hubs.citizen.templates": ["**/*"],
                    "urbanstack.citytools.pegel_warnung.templates": ["**/*"]})
