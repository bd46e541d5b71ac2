"""Build kube-apiserver and kube-controller-manager from the published Go modules.

``k8s.io/kubernetes`` cannot be built with ``go install``: its go.mod replaces
the ``k8s.io/*`` staging modules with folders of its own repository. We build it
from a small wrapper module that requires ``k8s.io/kubernetes`` and points
every staging module at its published ``v0.Y.Z`` release instead.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

from urbanstack import versions
from urbanstack.devplatform.progress import Step

BINARIES = ("kube-apiserver", "kube-controller-manager")

_REPLACE_BLOCK = re.compile(r"^replace \((.*?)^\)", re.S | re.M)
_STAGING = re.compile(r"^\s*(k8s\.io/[\w.-]+)\s+=>\s+\./staging/", re.M)


def binary_dir(cache_dir: Path, version: str = versions.KUBERNETES) -> Path:
    return cache_dir / "kubernetes" / version / "bin"


def is_built(cache_dir: Path, version: str = versions.KUBERNETES) -> bool:
    bindir = binary_dir(cache_dir, version)
    return all(os.access(bindir / name, os.X_OK) for name in BINARIES)


def staging_modules(kubernetes_go_mod: str) -> list[str]:
    """Names of the modules that kubernetes' go.mod replaces with staging folders."""
    block = _REPLACE_BLOCK.search(kubernetes_go_mod)
    if not block:
        raise RuntimeError("k8s.io/kubernetes go.mod has no replace block; unexpected layout")
    return sorted(_STAGING.findall(block.group(1)))


def wrapper_go_mod(kubernetes_go_mod: str, version: str) -> str:
    """go.mod of the wrapper: kubernetes' own requirements, staging modules published."""
    staging_version = "v0" + version[2:]  # v1.34.4 -> v0.34.4
    require = re.search(r"^require \((.*?)^\)", kubernetes_go_mod, re.S | re.M)
    go_line = re.search(r"^go (\S+)$", kubernetes_go_mod, re.M)
    lines = ["module urbanstack.local/kubernetes-build", "", f"go {go_line.group(1)}", ""]
    lines.append("require (")
    lines.append(f"\tk8s.io/kubernetes {version}")
    for entry in require.group(1).strip().splitlines():
        entry = entry.strip()
        if entry and not entry.startswith("//"):
            lines.append("\t" + entry.split("//")[0].strip())
    lines.append(")")
    lines.append("")
    lines.append("replace (")
    for module in staging_modules(kubernetes_go_mod):
        lines.append(f"\t{module} => {module} {staging_version}")
    lines.append(")")
    return "\n".join(lines) + "\n"


def build(cache_dir: Path, version: str = versions.KUBERNETES, log_path: Path | None = None) -> Path:
    """Build the binaries once per version; later calls return the cached folder."""
    bindir = binary_dir(cache_dir, version)
    if is_built(cache_dir, version):
        return bindir
    # Two `dev up`s at once (two checkouts share the cache) must not build into the same folder
    # and swap it under each other's feet: the second waits for the first and uses its build.
    lock_path = cache_dir / "kubernetes" / version / "build.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_built(cache_dir, version):
            return bindir
        return _build_locked(cache_dir, version, bindir, log_path)


def _build_locked(cache_dir: Path, version: str, bindir: Path, log_path: Path | None) -> Path:
    go = shutil.which("go")
    if not go:
        raise RuntimeError("Go is needed to build the Kubernetes API server; install Go 1.24+ and retry")
    workdir = cache_dir / "kubernetes" / version / "wrapper"
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = log_path or (workdir / "build.log")
    env = dict(os.environ, GOFLAGS="-mod=mod", CGO_ENABLED="0")
    with open(log_path, "ab") as log, Step(f"Kubernetes {version}: downloading modules") as step:
        info = subprocess.run(
            [go, "mod", "download", "-json", f"k8s.io/kubernetes@{version}"],
            check=True, capture_output=True, env=env, cwd=workdir,
        )
        go_mod_path = json.loads(info.stdout)["GoMod"]
        (workdir / "go.mod").write_text(wrapper_go_mod(Path(go_mod_path).read_text(), version))
        major, minor = version[1:].split(".")[:2]
        ldflags = " ".join(
            f"-X k8s.io/component-base/version.{key}={value}"
            for key, value in (("gitVersion", version), ("gitMajor", major), ("gitMinor", minor),
                               ("gitTreeState", "clean"))
        )
        tmp_bindir = bindir.with_name("bin.partial")
        tmp_bindir.mkdir(parents=True, exist_ok=True)
        for name in BINARIES:
            step.update(f"Kubernetes {version}: compiling {name} (10-15 min cold on 2 cores)")
            _run_logged(
                [go, "build", "-trimpath", "-ldflags", ldflags, "-o", str(tmp_bindir / name),
                 f"k8s.io/kubernetes/cmd/{name}"],
                cwd=workdir, env=env, log=log, what=f"building {name}", log_path=log_path,
            )
        if bindir.exists():
            shutil.rmtree(bindir)
        tmp_bindir.rename(bindir)
    return bindir


def _run_logged(cmd, *, cwd, env, log, what, log_path):
    log.write(f"$ {' '.join(cmd)}\n".encode())
    log.flush()
    result = subprocess.run(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {result.returncode}); see {log_path}")
