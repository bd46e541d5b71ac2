"""Run the platform program under Pulumi's mocks and hand tests what it declared.

No Pulumi CLI and no cluster: the mocks record every resource's inputs (the
Kubernetes manifests, camelCase as the provider would receive them), and the
tests review those like an ops reviewer reads a rendered chart.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pulumi
import yaml

ROOT = Path(__file__).resolve().parents[3]
PROGRAM = ROOT / "stacks" / "platform"
PROJECT = "urbanstack-platform"

# What `pulumi config set --secret` would hold; tests look for these strings
# everywhere a secret must not appear.
SECRETS = {
    "kafkaPassword": "kafka-Secret-7f3a9c",
    "keycloakAdminPassword": "keycloak-Secret-51be02",
    "warehousePassword": "warehouse-Secret-c0ffee",
    "keycloakDbPassword": "keycloak-db-Secret-9d1e44",
    "mqttAdminPassword": "mqtt-admin-Secret-4b7d21",
}


@dataclass(frozen=True)
class Declared:
    type: str
    name: str
    inputs: dict

    @property
    def kind(self) -> str:
        return self.type.rsplit(":", 1)[-1]

    @property
    def api_version(self) -> str:
        return self.type.split(":")[1]


@dataclass(frozen=True)
class Installation:
    declared: list[Declared]
    config: object
    secret_flags: dict[str, bool]

    def of_kind(self, kind: str) -> list[Declared]:
        return [d for d in self.declared if d.kind == kind]

    def one(self, kind: str, name: str) -> Declared:
        matches = [d for d in self.of_kind(kind) if d.inputs["metadata"]["name"] == name]
        assert len(matches) == 1, f"{kind}/{name}: {len(matches)} declared"
        return matches[0]


class RecordingMocks(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.declared: list[Declared] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        self.declared.append(Declared(args.typ, args.name, args.inputs))
        return [f"{args.name}-id", args.inputs]

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}


def stack_values(stack: str) -> dict[str, object]:
    """The `config:` of Pulumi.<stack>.yaml, keys without the project prefix."""
    document = yaml.safe_load((PROGRAM / f"Pulumi.{stack}.yaml").read_text(encoding="utf-8"))
    return {key.split(":", 1)[1]: value for key, value in document["config"].items()}


def use_mocks(values: dict[str, object], secrets: dict[str, str]) -> RecordingMocks:
    mocks = RecordingMocks()
    # set_mocks must come before the program is imported and before config is read.
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack="test", preview=False)
    encoded = {f"{PROJECT}:{key}": value if isinstance(value, str) else json.dumps(value)
               for key, value in (values | secrets).items()}
    pulumi.runtime.set_all_config(encoded, [f"{PROJECT}:{key}" for key in secrets])
    return mocks


def synthesize(values: dict[str, object], secrets: dict[str, str] | None = None) -> Installation:
    """Declare the whole platform for these config values, as `pulumi up` would."""
    mocks = use_mocks(values, SECRETS if secrets is None else secrets)
    from urbanstack.stacks.platform import config, program

    result: dict[str, object] = {}

    @pulumi.runtime.test
    def run():
        cfg = config.load()
        result["config"] = cfg
        program.deploy(cfg)
        credentials = {}
        holders = [cfg.external, cfg.in_cluster, cfg.in_cluster and cfg.in_cluster.keycloak_database, cfg.mqtt]
        for holder in filter(None, holders):
            for attribute, value in vars(holder).items():
                if isinstance(value, pulumi.Output):
                    credentials[attribute] = value

        async def flags():
            result["secret_flags"] = {key: await value.is_secret() for key, value in credentials.items()}

        return pulumi.Output.from_input(flags())

    run()
    return Installation(mocks.declared, result["config"], result["secret_flags"])
