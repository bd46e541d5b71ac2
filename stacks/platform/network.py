"""NetworkPolicies: nothing in urbanstack-system talks unless a rule below says so.

Policies only add up, so one default deny plus one allow-list per component
reads as a table of who may talk to whom:

| from | to | port |
|---|---|---|
| ingress controller | api, connectors (``/ingest``), hub (and in-cluster Keycloak) | http |
| monitoring namespace (optional) | every component | http (/metrics) |
| components (``backends.USERS``) | Keycloak, Kafka, ClickHouse, MQTT (optional) | their client ports |
| ingress controller | in-cluster MQTT broker (``/mqtt``) | its WebSockets port |
| operator, ``KUBERNETES_API_READERS``, in-cluster Kafka's entity operator | API server | ``apiServer.ports`` |
| connectors | public data sources | 443 |
| hub | the metadata store's PostgreSQL | ``hub.metadataPort`` |
| hub (in-cluster Keycloak) | Keycloak's public host, through the ingress | 443 |
| every pod | cluster DNS | 53 |
"""

from __future__ import annotations

import pulumi
from pulumi_kubernetes.networking.v1 import NetworkPolicy

from urbanstack.stacks.platform import common
from urbanstack.stacks.platform.backends import USERS, Backends
from urbanstack.stacks.platform.config import KUBERNETES_API_READERS, RUNTIME_SERVICES, PlatformConfig

COMPONENTS = ("operator", *RUNTIME_SERVICES)
DNS_PORTS = [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
HTTP = [{"protocol": "TCP", "port": "http"}]
# What the Ingress routes to (services.api_paths and the hub's Ingress).
PUBLIC = ("api", "connectors", "hub")


def _namespace(namespace: str) -> dict:
    return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}


def _tcp(ports) -> list[dict]:
    return [{"protocol": "TCP", "port": port} for port in ports]


def _ingress_rules(cfg: PlatformConfig, component: str) -> list[dict]:
    rules = []
    if component in PUBLIC:
        rules.append({"from": [_namespace(cfg.ingress.controller_namespace)], "ports": HTTP})
    if cfg.monitoring_namespace:
        rules.append({"from": [_namespace(cfg.monitoring_namespace)], "ports": HTTP})
    return rules


def _egress_rules(cfg: PlatformConfig, backends: Backends, component: str) -> list[dict]:
    rules = [{"to": list(backend.peers), "ports": _tcp(backend.ports)}
             for name, backend in backends.by_name.items() if component in USERS[name]]
    if component == "operator" or component in KUBERNETES_API_READERS:
        rules.append({"to": [{"ipBlock": {"cidr": cidr}} for cidr in cfg.api_server_cidrs],
                      "ports": _tcp(cfg.api_server_ports)})
    if component == "connectors":
        rules.append({"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": _tcp([443])})
    if component == "hub":
        # A PostgreSQL the platform's operator provides, anywhere; only its port.
        rules.append({"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": _tcp([cfg.hub.metadata_port])})
        if backends.by_name["keycloak"].public_host:
            # In-cluster Keycloak by its public host (services._env): the load balancer's
            # address, or the controller's pods once the address is translated.
            rules.append({"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}, _namespace(cfg.ingress.controller_namespace)],
                          "ports": _tcp([443])})
    return rules


def _policy(cfg: PlatformConfig, policy_name: str, component: str, spec: dict,
            after: list[pulumi.Resource]) -> NetworkPolicy:
    return NetworkPolicy(policy_name, metadata=common.metadata(cfg, policy_name, component), spec=spec,
                         opts=common.options(depends_on=after))


def install(cfg: PlatformConfig, backends: Backends, *, after: list[pulumi.Resource]) -> dict[str, NetworkPolicy]:
    policies = {
        "default-deny": _policy(cfg, "urbanstack-default-deny", "network", {
            "podSelector": {}, "policyTypes": ["Ingress", "Egress"]}, after),
        "dns": _policy(cfg, "urbanstack-allow-dns", "network", {
            "podSelector": {}, "policyTypes": ["Egress"],
            "egress": [{"to": [_namespace("kube-system") | {"podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                        "ports": DNS_PORTS}]}, after),
    }
    for component in COMPONENTS:
        policies[component] = _policy(cfg, common.name(component), component, {
            "podSelector": {"matchLabels": common.selector(component)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": _ingress_rules(cfg, component),
            "egress": _egress_rules(cfg, backends, component),
        }, after)
    for name, backend in backends.by_name.items():
        if backend.pod_selector is None:
            continue
        own_pods = {"podSelector": {"matchLabels": backend.pod_selector}}
        clients = {"podSelector": {"matchExpressions": [{
            "key": "app.kubernetes.io/name", "operator": "In",
            "values": [common.name(component) for component in USERS[name]]}]}}
        ingress = [{"from": [own_pods]},
                   {"from": [clients], "ports": _tcp(backend.ports)}]
        if backend.operator_namespace:
            ingress.append({"from": [_namespace(backend.operator_namespace)]})
        if backend.public_host:
            ingress.append({"from": [_namespace(cfg.ingress.controller_namespace)], "ports": _tcp(backend.ports)})
        if backend.public_ports:
            ingress.append({"from": [_namespace(cfg.ingress.controller_namespace)], "ports": _tcp(backend.public_ports)})
        policies[f"backend-{name}"] = _policy(cfg, f"urbanstack-backend-{name}", "backends", {
            "podSelector": {"matchLabels": backend.pod_selector},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": ingress,
            "egress": [{"to": [own_pods]}, *backend.extra_egress],
        }, after)
    return policies
