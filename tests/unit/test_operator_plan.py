"""plan(): what each backend should look like for a municipality, without any server."""

import copy
from pathlib import Path

import pytest
import yaml

from urbanstack.operator import naming
from urbanstack.operator.ags import MunicipalityDirectory
from urbanstack.operator.models import parse_citytool, parse_municipality
from urbanstack.operator.plan import MissingToolError, PlanError, plan

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "municipalities.derived.csv"


def _load(name):
    return yaml.safe_load((ROOT / "examples" / name).read_text(encoding="utf-8"))


def municipality(name="guetersloh", **spec):
    manifest = _load(f"municipality-{name}.yaml")
    manifest["spec"].update(spec)
    return parse_municipality(manifest)


TOOLS = {tool.name: tool for tool in (parse_citytool(_load("citytool-passantenfrequenz-wetter.yaml")),
                                      parse_citytool(_load("citytool-pegel-warnung.yaml")))}


def test_examples_validate_against_the_models_and_the_directory():
    directory = MunicipalityDirectory.load(FIXTURE)
    for path in sorted((ROOT / "examples").glob("municipality-*.yaml")):
        parsed = parse_municipality(yaml.safe_load(path.read_text(encoding="utf-8")), directory)
        assert naming.slugify(directory.lookup(parsed.spec.ags).name) == parsed.slug
        plan(parsed, TOOLS)


def test_same_spec_gives_the_same_desired_state():
    first = plan(municipality(), TOOLS)
    again = plan(municipality(), dict(reversed(list(TOOLS.items()))))
    assert first == again
    assert repr(first) == repr(again)


def test_created_names_of_guetersloh():
    names = plan(municipality(), TOOLS).created_names()
    assert names == {
        "namespace": "muni-guetersloh", "database": "guetersloh", "realm": "urbanstack",
        "organization": "guetersloh", "kafkaUser": "muni-guetersloh", "secret": "guetersloh-credentials",
        "topics": ["guetersloh.passantenfrequenz-wetter.pedestrian_counts",
                   "guetersloh.passantenfrequenz-wetter.weather",
                   "guetersloh.pegel-warnung.water_levels", "guetersloh.pegel-warnung.warnings", "guetersloh.dlq"],
        "tables": ["passantenfrequenz_wetter__pedestrian_counts", "passantenfrequenz_wetter__weather",
                   "pegel_warnung__water_levels", "pegel_warnung__warnings"],
    }


def test_rheda_wiedenbrueck_names_survive_the_umlaut():
    state = plan(municipality("rheda-wiedenbrueck"), TOOLS)
    assert state.runtime.namespace == "muni-rheda-wiedenbrueck"
    assert state.warehouse.database == "rheda_wiedenbrueck"
    assert state.streaming.topics[0].name == "rheda-wiedenbrueck.pegel-warnung.water_levels"
    assert state.identity.organization.name == "Rheda-Wiedenbrück"


# Identity -----------------------------------------------------------------------

def test_organization_strategy_shares_one_realm():
    identity = plan(municipality(), TOOLS).identity
    assert identity.realm == "urbanstack" and not identity.owns_realm
    assert identity.organization.alias == "guetersloh"
    assert identity.organization.attributes["ags"] == ("05754008",)
    assert all("organization" in client.default_scopes for client in identity.clients)


def test_realm_strategy_gets_a_dedicated_realm():
    identity = plan(municipality("bielefeld"), TOOLS).identity
    assert identity.realm == "muni-bielefeld" and identity.owns_realm
    assert identity.organization is None
    assert identity.realm_settings["realm"] == "muni-bielefeld"
    assert identity.realm_settings["organizationsEnabled"] is False


def test_roles_and_clients():
    identity = plan(municipality(), TOOLS).identity
    assert [role.name for role in identity.roles] == ["gov-viewer", "gov-editor", "gov-admin", "citizen"]
    assert {client.client_id for client in identity.clients} == {
        "guetersloh-gov-hub", "guetersloh-citizen-hub", "guetersloh-api",
        "guetersloh--tool-passantenfrequenz-wetter", "guetersloh--tool-pegel-warnung"}
    tool = identity.client("guetersloh--tool-pegel-warnung")
    assert [role.name for role in tool.client_roles] == ["hochwasser-einsatzleitung"]
    assert tool.service_account and not tool.public and tool.secret_key
    gov_hub = identity.client("guetersloh-gov-hub")
    assert gov_hub.public and gov_hub.pkce and gov_hub.audiences == ("guetersloh-api",)


def test_admins_must_set_password_and_otp():
    users = plan(municipality("bielefeld"), TOOLS).identity.users
    assert [user.username for user in users] == ["urbandata@bielefeld.de", "it-leitstelle@bielefeld.de"]
    for user in users:
        assert user.required_actions == ("UPDATE_PASSWORD", "CONFIGURE_TOTP")
        assert user.realm_roles == ("gov-admin",) and user.enabled


def test_realm_has_brute_force_protection_and_password_policy():
    settings = plan(municipality(), TOOLS).identity.realm_settings
    assert settings["bruteForceProtected"] is True and settings["failureFactor"] == 5
    assert "length(12)" in settings["passwordPolicy"]
    assert settings["registrationAllowed"] is False


# Streaming ----------------------------------------------------------------------

def test_acls_cover_only_the_tenants_own_prefix_and_the_topics_it_shares():
    streaming = plan(municipality(), TOOLS).streaming
    shared = "guetersloh.pegel-warnung.water_levels"
    assert {(acl.resource_type, acl.pattern_type, acl.resource_name, acl.principal) for acl in streaming.acls} == {
        ("TOPIC", "PREFIXED", "guetersloh.", "User:muni-guetersloh"),
        ("GROUP", "PREFIXED", "guetersloh.", "User:muni-guetersloh"),
        ("TOPIC", "LITERAL", shared, "User:muni-rheda-wiedenbrueck"),
        ("TOPIC", "LITERAL", shared, "User:muni-bielefeld")}
    assert {acl.operation for acl in streaming.acls if acl.resource_type == "TOPIC"
            and acl.principal == "User:muni-guetersloh"} == {"READ", "WRITE", "DESCRIBE", "DESCRIBE_CONFIGS"}
    # A neighbour may read the shared topic, never write it; the public share grants no Kafka access.
    assert {acl.operation for acl in streaming.acls if acl.pattern_type == "LITERAL"} == {"READ", "DESCRIBE"}
    assert all(acl.permission == "ALLOW" for acl in streaming.acls)
    assert all(topic.name.startswith(streaming.topic_prefix) for topic in streaming.topics)


def test_topics_take_partitions_and_retention_from_the_dataset():
    streaming = plan(municipality("bielefeld"), TOOLS).streaming
    water = streaming.topic("bielefeld.pegel-warnung.water_levels")
    assert water.partitions == 2
    assert water.config["retention.ms"] == str(3650 * 86_400_000)
    assert streaming.topic("bielefeld.dlq").partitions == 1


def test_municipality_retention_overrides_the_dataset():
    topic = plan(municipality(retentionDays=90), TOOLS).streaming.topic("guetersloh.pegel-warnung.water_levels")
    assert topic.config["retention.ms"] == str(90 * 86_400_000)


def test_more_partitions_than_the_plan_allows_is_a_clear_error():
    with pytest.raises(PlanError, match="need 8 Kafka partitions, plan 'medium' allows 4"):
        plan(municipality(plan={"name": "medium", "partitions": 4}), TOOLS)


# Warehouse ----------------------------------------------------------------------

def test_table_ddl_partitions_by_month_sorts_by_dataset_key_and_expires():
    table = plan(municipality(), TOOLS).warehouse.table("passantenfrequenz_wetter__pedestrian_counts")
    assert table.ddl.startswith(
        "CREATE TABLE IF NOT EXISTS `guetersloh`.`passantenfrequenz_wetter__pedestrian_counts`")
    assert "ENGINE = ReplacingMergeTree(ingested_at)" in table.ddl
    assert "PARTITION BY toYYYYMM(`observed_at`)" in table.ddl
    assert "ORDER BY (`location_name`, `sensor_id`, `observed_at`, `event_id`)" in table.ddl
    assert "TTL toDateTime(`observed_at`) + INTERVAL 730 DAY DELETE" in table.ddl
    assert table.topic == "guetersloh.passantenfrequenz-wetter.pedestrian_counts"


def test_columns_are_standard_plus_typed_dataset_fields_with_units():
    table = plan(municipality(), TOOLS).warehouse.table("passantenfrequenz_wetter__pedestrian_counts")
    types = table.column_types
    assert types["observed_at"] == "DateTime64(3, 'UTC')"
    assert types["lon"] == "Nullable(Float64)" and types["event_id"] == "String"
    assert types["pedestrians"] == "UInt32"
    assert types["pedestrians_ltr"] == "Nullable(UInt32)"
    assert "`pedestrians` UInt32 COMMENT 'Pedestrians in both directions. [persons]'" in table.ddl
    weather = plan(municipality(), TOOLS).warehouse.table("passantenfrequenz_wetter__weather")
    assert "[°C]" in weather.ddl and "ORDER BY (`sensor_id`, `observed_at`, `event_id`)" in weather.ddl


def test_retention_change_has_a_ttl_statement():
    table = plan(municipality(retentionDays=30), TOOLS).warehouse.table("pegel_warnung__water_levels")
    assert table.modify_ttl_sql() == ("ALTER TABLE `guetersloh`.`pegel_warnung__water_levels` "
                                      "MODIFY TTL toDateTime(`observed_at`) + INTERVAL 30 DAY DELETE")


def test_server_access_grants_only_the_own_database_and_shared_tables():
    access = plan(municipality(), TOOLS).warehouse.access
    assert access.role_sql() == "CREATE ROLE IF NOT EXISTS `muni_guetersloh__role`"
    privileges = access.privileges()
    assert {("muni_guetersloh__role", "guetersloh", None, "SELECT"),
            ("muni_guetersloh__role", "guetersloh", None, "INSERT"),
            ("muni_bielefeld__role", "guetersloh", "pegel_warnung__water_levels", "SELECT"),
            ("urbanstack_public_reader", "guetersloh", "passantenfrequenz_wetter__pedestrian_counts",
             "SELECT")} <= privileges
    assert all(database == "guetersloh" for _, database, _, _ in privileges)
    assert access.quota_sql().startswith("CREATE QUOTA OR REPLACE `muni_guetersloh_quota` FOR INTERVAL 1 hour "
                                         "MAX queries = 20000")


def test_suspended_tenant_role_keeps_select_only():
    privileges = plan(municipality(suspended=True), TOOLS).warehouse.access.privileges()
    own = {privilege for grantee, _, table, privilege in privileges if grantee == "muni_guetersloh__role"}
    assert own == {"SELECT"}


def test_user_sql_carries_a_hash_never_the_password():
    access = plan(municipality(), TOOLS).warehouse.access
    create_user, grant_role = access.user_sql("s3cret-passw0rd", "guetersloh")
    assert "s3cret-passw0rd" not in create_user and "sha256_hash" in create_user
    assert grant_role == "GRANT `muni_guetersloh__role` TO `muni_guetersloh`"


def test_desired_state_holds_no_secret_values():
    state = plan(municipality(), TOOLS)
    assert state.runtime.secret.keys[:4] == ("kafka-username", "kafka-password", "warehouse-username",
                                             "warehouse-password")
    text = repr(state.runtime.objects)
    for reference in ("warehouse-password", "kafka-password", "URBANSTACK_KAFKA_PASSWORD"):
        text = text.replace(reference, "")
    assert "password" not in text
    deployments = [obj.manifest for obj in state.runtime.objects if obj.kind == "Deployment"]
    assert deployments
    for deployment in deployments:  # credentials reach a tool only as references to the Secret
        for variable in deployment["spec"]["template"]["spec"]["containers"][0]["env"]:
            if "PASSWORD" in variable["name"] or "SECRET" in variable["name"]:
                assert "value" not in variable
                assert variable["valueFrom"]["secretKeyRef"]["name"] == "guetersloh-credentials"


def test_sharing_a_tool_that_is_not_enabled_is_a_clear_error():
    share = {"tool": "passantenfrequenz-wetter", "dataset": "weather", "municipalities": ["guetersloh"]}
    with pytest.raises(PlanError, match="spec.shares.0: tool 'passantenfrequenz-wetter' is not enabled"):
        plan(municipality("bielefeld", shares=[share]), TOOLS)


def test_enabling_an_unknown_tool_names_it():
    with pytest.raises(MissingToolError, match="spec.tools.0 'pegel-warnung': no CityTool"):
        plan(municipality("bielefeld"), {})


# Runtime ------------------------------------------------------------------------

def test_namespace_quota_limits_and_default_deny():
    runtime = plan(municipality("rheda-wiedenbrueck"), TOOLS).runtime
    namespace = runtime.get("Namespace", "muni-rheda-wiedenbrueck").manifest
    assert namespace["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "urbanstack-operator", "urbanstack.io/municipality": "rheda-wiedenbrueck",
        "urbanstack.io/ags": "05754028", "pod-security.kubernetes.io/enforce": "restricted"}
    assert runtime.objects[0].kind == "Namespace"
    quota = runtime.get("ResourceQuota", "tenant-quota").manifest
    assert quota["spec"]["hard"]["limits.cpu"] == "1" and quota["spec"]["hard"]["limits.memory"] == "2Gi"
    assert runtime.get("LimitRange", "tenant-limits").manifest["spec"]["limits"][0]["max"]["memory"] == "2Gi"
    deny = runtime.get("NetworkPolicy", "default-deny").manifest["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


def test_tool_with_image_runs_non_root_with_limits_and_probes():
    runtime = plan(municipality(), TOOLS).runtime
    deployment = runtime.get("Deployment", "tool-pegel-warnung").manifest
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["resources"]["limits"] == {"cpu": "500m", "memory": "256Mi"}
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert deployment["spec"]["replicas"] == 1
    service = runtime.get("Service", "tool-pegel-warnung").manifest
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    settings = runtime.get("ConfigMap", "tool-pegel-warnung-settings").manifest["data"]["settings.json"]
    assert '"warnLevelCm": 180' in settings


def test_changed_tool_settings_restart_the_tool():
    def checksum(state):
        template = state.runtime.get("Deployment", "tool-pegel-warnung").manifest["spec"]["template"]
        return template["metadata"]["annotations"]["urbanstack.io/settings-sha256"]
    before = plan(municipality(), TOOLS)
    after = plan(municipality(tools=[{"name": "passantenfrequenz-wetter"},
                                     {"name": "pegel-warnung", "settings": {"warnLevelCm": 100}}]), TOOLS)
    assert checksum(before) != checksum(after)


def test_tool_without_image_runs_no_workload():
    manifest = yaml.safe_load((ROOT / "examples" / "citytool-pegel-warnung.yaml").read_text(encoding="utf-8"))
    del manifest["spec"]["image"]
    state = plan(municipality("bielefeld"), {"pegel-warnung": parse_citytool(manifest)})
    assert not [obj for obj in state.runtime.objects if obj.kind in ("Deployment", "Service")]
    assert state.warehouse.tables and state.streaming.topics


def test_manifest_values_cannot_break_out_of_yaml():
    manifest = copy.deepcopy(yaml.safe_load((ROOT / "examples" / "citytool-pegel-warnung.yaml").read_text()))
    manifest["spec"]["env"] = [{"name": "GREETING", "value": "x\n  injected: true\n\"}: {"}]
    state = plan(municipality("bielefeld"), {"pegel-warnung": parse_citytool(manifest)})
    env = state.runtime.get("Deployment", "tool-pegel-warnung").manifest["spec"]["template"]["spec"][
        "containers"][0]["env"]
    assert env[-1] == {"name": "GREETING", "value": "x\n  injected: true\n\"}: {"}


# Suspension ---------------------------------------------------------------------

def test_suspended_disables_logins_and_writes_but_deletes_nothing():
    active, suspended = plan(municipality(), TOOLS), plan(municipality(suspended=True), TOOLS)
    assert suspended.suspended
    assert all(not user.enabled for user in suspended.identity.users)
    assert all(not client.enabled for client in suspended.identity.clients)
    assert suspended.identity.organization.enabled is False
    assert "WRITE" not in {acl.operation for acl in suspended.streaming.acls}
    assert "READ" in {acl.operation for acl in suspended.streaming.acls}
    assert suspended.warehouse.access.grants[0].privileges == ("SELECT",)
    deployment = suspended.runtime.get("Deployment", "tool-pegel-warnung").manifest
    assert deployment["spec"]["replicas"] == 0
    assert suspended.created_names() == active.created_names()
    assert [table.ddl for table in suspended.warehouse.tables] == [table.ddl for table in active.warehouse.tables]


def test_suspended_dedicated_realm_is_disabled():
    assert plan(municipality("bielefeld", suspended=True), TOOLS).identity.realm_settings["enabled"] is False
    # The shared realm serves every other tenant and stays on.
    assert plan(municipality(suspended=True), TOOLS).identity.realm_settings["enabled"] is True


def test_tool_deployments_carry_the_platforms_endpoints_and_no_relay_password():
    from urbanstack.operator.plan import ToolEndpoints

    endpoints = ToolEndpoints(kafka_bootstrap="kafka.urbanstack-system.svc:9092", smtp_host="relay.example.org",
                              smtp_port=587, smtp_from="no-reply@example.org", smtp_starttls=True)
    deployment = plan(municipality(), TOOLS, endpoints=endpoints).runtime.get("Deployment", "tool-pegel-warnung")
    env = {v["name"]: v.get("value") for v in deployment.manifest["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["URBANSTACK_KAFKA_BOOTSTRAP"] == "kafka.urbanstack-system.svc:9092"
    assert (env["URBANSTACK_SMTP_HOST"], env["URBANSTACK_SMTP_PORT"], env["URBANSTACK_SMTP_STARTTLS"]) == (
        "relay.example.org", "587", "1")
    assert "URBANSTACK_SMTP_PASSWORD" not in env
    bare = plan(municipality(), TOOLS).runtime.get("Deployment", "tool-pegel-warnung").manifest
    assert "URBANSTACK_KAFKA_BOOTSTRAP" not in {v["name"] for v in bare["spec"]["template"]["spec"]["containers"][0]["env"]}
