"""The CustomResourceDefinitions: exactly the files in ``crds/``, read at program time.

``crds/`` is generated from the operator's models (plus Kopf's peering CRD), so
the stack never holds a second copy that could drift.
"""

from __future__ import annotations

from pathlib import Path

import pulumi
import yaml
from pulumi_kubernetes.apiextensions.v1 import CustomResourceDefinition

from urbanstack.stacks.platform import common
from urbanstack.stacks.platform.config import PlatformConfig


def read(folder: Path) -> list[dict]:
    """Every CRD manifest in ``folder``, sorted by name."""
    manifests = []
    for path in sorted(folder.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if document and document.get("kind") == "CustomResourceDefinition":
                manifests.append(document)
    if not manifests:
        raise FileNotFoundError(f"no CustomResourceDefinition in {folder}: run "
                                f"`python -m urbanstack.operator.crdgen` or set urbanstack-platform:crdsDir")
    return sorted(manifests, key=lambda manifest: manifest["metadata"]["name"])


def install(cfg: PlatformConfig) -> dict[str, CustomResourceDefinition]:
    installed = {}
    for manifest in read(cfg.crds_dir):
        crd_name = manifest["metadata"]["name"]
        meta = common.metadata(cfg, crd_name, "crds", namespace=None)
        meta["labels"] = manifest["metadata"].get("labels", {}) | meta["labels"]
        installed[crd_name] = CustomResourceDefinition(
            crd_name,
            metadata=meta,
            spec=manifest["spec"],
            # Deleting a CRD deletes every Municipality and CityTool with it; an
            # uninstall must never take the tenants along (docs/deploy.md).
            opts=pulumi.ResourceOptions(retain_on_delete=True),
        )
    return installed
