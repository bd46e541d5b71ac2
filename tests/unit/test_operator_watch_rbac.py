"""The watch cache's contract with RBAC and the plan: it watches exactly what the operator creates
(Secrets excepted) and the operator's ClusterRole grants list and watch on exactly that."""

from __future__ import annotations

from pathlib import Path

import yaml

from urbanstack.operator import rbac
from urbanstack.operator.kubecache import KINDS
from urbanstack.operator.models import parse_citytool, parse_municipality
from urbanstack.operator.plan import plan

ROOT = Path(__file__).resolve().parents[2]


def _cluster_grants(verb: str, rules=rbac.RULES + rbac.WATCH_RULES) -> set[tuple[str, str]]:
    """What the operator's two cluster-wide bound roles grant with ``verb``, on any object."""
    return {(group, resource) for rule in rules if verb in rule.verbs and not rule.resource_names
            for group in rule.api_groups for resource in rule.resources}


def test_every_kind_the_plan_creates_is_watched_except_secrets():
    tools = [parse_citytool(yaml.safe_load((ROOT / "examples" / n).read_text()))
             for n in ("citytool-passantenfrequenz-wetter.yaml", "citytool-pegel-warnung.yaml")]
    desired = plan(parse_municipality(yaml.safe_load((ROOT / "examples" / "municipality-guetersloh.yaml")
                                                     .read_text())), tools)
    planned = {(obj.api_version, obj.kind) for obj in desired.runtime.objects}
    assert planned == {(k.api_version, k.kind) for k in KINDS}
    assert all(k.kind != "Secret" for k in KINDS)


def test_the_operator_may_list_and_watch_exactly_the_cached_kinds_cluster_wide_and_no_secrets():
    cached = {(k.group, k.resource) for k in KINDS}
    assert cached <= _cluster_grants("list") and cached <= _cluster_grants("watch")
    # The watch role holds exactly list and watch of the cached kinds (namespaces: the main role).
    assert _cluster_grants("list", rbac.WATCH_RULES) == _cluster_grants("watch", rbac.WATCH_RULES) == cached - {
        ("", "namespaces")}
    assert {verb for rule in rbac.WATCH_RULES for verb in rule.verbs} == {"list", "watch"}
    # Nothing beyond the cache and the custom resources Kopf watches is listable cluster-wide ...
    assert _cluster_grants("watch") - cached == {
        ("urbanstack.io", "municipalities"), ("urbanstack.io", "citytools"),
        ("apiextensions.k8s.io", "customresourcedefinitions"), ("kopf.dev", "clusterkopfpeerings")}
    # ... the cache needs no cluster-wide get of these kinds, and Secrets stay in the tenant role.
    assert not {("", "configmaps"), ("", "services"), ("apps", "deployments")} & _cluster_grants("get")
    assert not {(g, r) for g, r in _cluster_grants("list") if r == "secrets"}
