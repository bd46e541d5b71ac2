"""Builds the front-end bundle (``frontend/`` → ``static/dist``) with npm and esbuild.

    python -m urbanstack.webassets build [--force]

``make install`` runs this, so ``make test``, ``make demo`` and CI always have the
bundle. The build is skipped when ``static/dist/manifest.json`` records the hash of
the current inputs (package-lock.json, package.json, build.mjs, src/*); ``npm ci`` is
skipped when node_modules was installed from the same package-lock.json. Safe to run
twice, and two runs at once wait for each other.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

from urbanstack.devplatform.progress import Step
from urbanstack.runtime.web.rendering import WEB_DIR

FRONTEND = WEB_DIR / "frontend"
DIST = WEB_DIR / "static" / "dist"
MANIFEST = DIST / "manifest.json"
NODE_MODULES = FRONTEND / "node_modules"
LOCK_STAMP = NODE_MODULES / ".urbanstack-package-lock.sha256"
MIN_NODE_MAJOR = 18


class AssetBuildError(RuntimeError):
    """The bundle could not be built; the message says what to do."""


def input_files() -> list[Path]:
    fixed = [FRONTEND / "package.json", FRONTEND / "package-lock.json", FRONTEND / "build.mjs"]
    sources = sorted(p for p in (FRONTEND / "src").rglob("*") if p.is_file())
    return [*fixed, *sources]


def input_hash() -> str:
    digest = hashlib.sha256()
    for path in input_files():
        digest.update(path.relative_to(FRONTEND).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def manifest() -> dict | None:
    try:
        return json.loads(MANIFEST.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def is_current() -> bool:
    """The manifest was written from the current inputs and every file it names exists."""
    data = manifest()
    return bool(data and data.get("inputs_sha256") == input_hash()
                and all((DIST / name).is_file() for name in data.get("files", {}).values()))


def _tool(name: str) -> str:
    path = shutil.which(name)
    if not path:
        raise AssetBuildError(
            f"building the web front end needs '{name}' (Node.js {MIN_NODE_MAJOR} or newer with npm), "
            "and it is not on PATH; install it (Debian: 'apt-get install nodejs npm') and run "
            "'python -m urbanstack.webassets build' again")
    return path


def _check_node(node: str) -> None:
    version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
    try:
        major = int(version.lstrip("v").split(".")[0])
    except ValueError:
        raise AssetBuildError(f"could not read the Node.js version from '{node} --version' ({version!r})") from None
    if major < MIN_NODE_MAJOR:
        raise AssetBuildError(f"the web front end needs Node.js {MIN_NODE_MAJOR} or newer, found {version} at {node}")


def _run(command: list[str], what: str, env: dict | None = None) -> None:
    result = subprocess.run(command, cwd=FRONTEND, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        output = (result.stderr.strip() or result.stdout.strip())[-2000:]
        raise AssetBuildError(f"{what} failed (exit {result.returncode}, in {FRONTEND}: {' '.join(command)}):\n{output}")


def _lock_hash() -> str:
    return hashlib.sha256((FRONTEND / "package-lock.json").read_bytes()).hexdigest()


@contextmanager
def _exclusive():
    FRONTEND.mkdir(exist_ok=True)
    with open(FRONTEND / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def build(force: bool = False) -> bool:
    """Build the bundle unless it is current; returns whether it built."""
    with _exclusive():
        if not force and is_current():
            return False
        node, npm = _tool("node"), _tool("npm")
        _check_node(node)
        lock = _lock_hash()
        if not (LOCK_STAMP.is_file() and LOCK_STAMP.read_text().strip() == lock):
            with Step("web front end: npm ci"):
                # --ignore-scripts: nothing from the registry runs at install time;
                # esbuild finds its platform binary through its optional dependency.
                _run([npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"], "npm ci")
            LOCK_STAMP.write_text(lock + "\n")
        with Step("web front end: esbuild bundle"):
            _run([node, "build.mjs"], "the front-end build (build.mjs)",
                 env=dict(os.environ, ASSETS_INPUT_HASH=input_hash()))
        if not is_current():
            raise AssetBuildError(f"the front-end build finished but {MANIFEST} does not match the inputs")
        return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m urbanstack.webassets",
                                     description="Build the hubs' front-end bundle into runtime/web/static/dist.")
    commands = parser.add_subparsers(dest="command", required=True)
    build_command = commands.add_parser("build", help="npm ci (when the lock file changed) and esbuild "
                                                      "(when an input changed)")
    build_command.add_argument("--force", action="store_true", help="rebuild even if the manifest is current")
    args = parser.parse_args(argv)
    try:
        built = build(force=args.force)
    except AssetBuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    data = manifest() or {}
    state = "built" if built else "up to date"
    print(f"web front end {state}: {len(data.get('files', {}))} files in {DIST}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
