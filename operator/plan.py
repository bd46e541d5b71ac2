"""``plan(municipality, tools)``: the desired state of every backend for one tenant.

Pure: no I/O, no clock, no randomness, no settings. The same spec always gives
an equal ``DesiredState``, which the provisioners compare with what they
observe. Secrets are never part of it: the plan names the Secret and its keys,
the provisioners create and read the values.

Each part carries stable names (what to look up) and the desired settings (what
to compare), so a provisioner can tell "missing", "drifted" and "as desired"
apart without knowing how the plan was derived.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from urbanstack import keycloak_theme, tenancy
from urbanstack.operator import naming, rbac
# The provisioners import these from here.
from urbanstack.tenancy import EMPTY_SOURCE_CUTOFF, RollupState, parse_rollup_comment  # noqa: F401
from urbanstack.operator.models import (CityTool, ColumnType, Dataset, DatasetField, IdentityStrategy, Municipality,
                                        Quotas)
from urbanstack.operator.templating import quote_identifier, render, render_yaml
from urbanstack.operator.provisioners.messaging import messaging_part

MANAGED_BY = "urbanstack-operator"
LABEL_MUNICIPALITY = "urbanstack.io/municipality"
LABEL_AGS = "urbanstack.io/ags"
LABEL_TOOL = "urbanstack.io/tool"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
PLATFORM_NAMESPACE_SELECTOR = {"urbanstack.io/platform": "true"}

GOV_ROLES = ("gov-admin", "gov-editor", "gov-viewer")
ADMIN_REQUIRED_ACTIONS = ("UPDATE_PASSWORD", "CONFIGURE_TOTP")
DLQ_RETENTION_DAYS = 30
DLQ_PARTITIONS = 1
DEDUPLICATION_WINDOW = 1000
ERRORS_PER_HOUR_FACTOR = 10
SETTINGS_DIR = "/etc/urbanstack/tool"

_MS_PER_DAY = 86_400_000
_WRITE_OPERATIONS = ("WRITE",)
_READ_OPERATIONS = ("READ", "DESCRIBE", "DESCRIBE_CONFIGS")


class PlanError(ValueError):
    """The spec cannot be realised as written; the message says what to change."""


class MissingToolError(PlanError):
    """An enabled CityTool does not exist (yet): may resolve once it is applied."""


# Identity ---------------------------------------------------------------------

@dataclass(frozen=True)
class KeycloakRole:
    name: str
    description: str
    composites: tuple[str, ...] = ()


@dataclass(frozen=True)
class KeycloakClient:
    client_id: str
    name: str
    kind: str                      # gov-hub | citizen-hub | api | tool; URLs come from the platform's settings
    public: bool
    enabled: bool
    standard_flow: bool
    service_account: bool
    pkce: bool
    audiences: tuple[str, ...] = ()   # client ids added to this client's access tokens
    client_roles: tuple[KeycloakRole, ...] = ()
    default_scopes: tuple[str, ...] = ()
    secret_key: str | None = None     # key in the tenant Secret holding this client's secret


@dataclass(frozen=True)
class KeycloakUser:
    username: str
    email: str
    enabled: bool
    realm_roles: tuple[str, ...]
    required_actions: tuple[str, ...]


@dataclass(frozen=True)
class KeycloakOrganization:
    alias: str
    name: str
    enabled: bool
    domains: tuple[str, ...]
    attributes: dict[str, tuple[str, ...]]


@dataclass(frozen=True)
class RealmMail:
    """How a realm sends e-mail (invitations, password resets): the platform's relay. No password:
    the plan ends up in status and logs, so the provisioner adds it only when it writes the realm."""
    host: str
    port: int
    from_address: str
    user: str = ""
    starttls: bool = False
    from_name: str = "Urban Stack"

    @classmethod
    def from_settings(cls, settings) -> "RealmMail":
        return cls(host=settings.smtp_server, port=settings.smtp_port, from_address=settings.smtp_from,
                   user=settings.smtp_user, starttls=settings.smtp_starttls)

    def realm_value(self) -> dict[str, str]:
        """Keycloak's ``smtpServer`` map (every value a string, as Keycloak keeps it)."""
        value = {"host": self.host, "port": str(self.port), "from": self.from_address,
                 "fromDisplayName": self.from_name, "starttls": str(self.starttls).lower(), "ssl": "false",
                 "auth": str(bool(self.user)).lower()}
        if self.user:
            value["user"] = self.user
        return value


@dataclass(frozen=True)
class ToolEndpoints:
    """Where a tool's process finds the platform: Kafka's bootstrap servers and protocol and the
    mail relay (as ``URBANSTACK_*`` variables in its Deployment). Addresses only: a relay
    password or a Kafka CA would have to come from a Secret, and are not passed to tools."""
    kafka_bootstrap: str
    kafka_security_protocol: str = "SASL_PLAINTEXT"
    smtp_host: str = ""
    smtp_port: int = 25
    smtp_from: str = ""
    smtp_starttls: bool = False

    @classmethod
    def from_settings(cls, settings) -> "ToolEndpoints":
        return cls(kafka_bootstrap=settings.kafka_bootstrap, kafka_security_protocol=settings.kafka_security_protocol,
                   smtp_host=settings.smtp_server, smtp_port=settings.smtp_port, smtp_from=settings.smtp_from,
                   smtp_starttls=settings.smtp_starttls)

    def env(self) -> list[dict[str, str]]:
        values = {"URBANSTACK_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
                  "URBANSTACK_KAFKA_SECURITY_PROTOCOL": self.kafka_security_protocol,
                  "URBANSTACK_SMTP_HOST": self.smtp_host, "URBANSTACK_SMTP_PORT": str(self.smtp_port),
                  "URBANSTACK_SMTP_FROM": self.smtp_from, "URBANSTACK_SMTP_STARTTLS": "1" if self.smtp_starttls else "0"}
        return [{"name": name, "value": value} for name, value in values.items() if value]


@dataclass(frozen=True)
class IdentityPart:
    strategy: IdentityStrategy
    realm: str
    owns_realm: bool               # False: the shared realm outlives this tenant
    realm_settings: dict[str, Any]
    organization: KeycloakOrganization | None
    roles: tuple[KeycloakRole, ...]
    clients: tuple[KeycloakClient, ...]
    users: tuple[KeycloakUser, ...]
    mfa_required_roles: tuple[str, ...] = GOV_ROLES

    def client(self, client_id: str) -> KeycloakClient:
        return next(client for client in self.clients if client.client_id == client_id)


# Streaming --------------------------------------------------------------------

@dataclass(frozen=True, order=True)
class KafkaAcl:
    resource_type: str             # TOPIC | GROUP
    pattern_type: str              # PREFIXED: the tenant owns everything under its prefix, nothing else
    resource_name: str
    principal: str
    operation: str
    permission: str = "ALLOW"
    host: str = "*"


@dataclass(frozen=True)
class KafkaTopic:
    name: str
    partitions: int
    config: dict[str, str]
    tool: str | None = None
    dataset: str | None = None


@dataclass(frozen=True)
class StreamingPart:
    user: str
    principal: str
    mechanism: str
    topic_prefix: str
    topics: tuple[KafkaTopic, ...]
    dlq_topic: str
    acls: tuple[KafkaAcl, ...]
    password_key: str              # key in the tenant Secret

    def topic(self, name: str) -> KafkaTopic:
        return next(topic for topic in self.topics if topic.name == name)


# Warehouse --------------------------------------------------------------------

@dataclass(frozen=True)
class WarehouseColumn:
    name: str
    type: str
    default: str | None = None
    comment: str | None = None


@dataclass(frozen=True)
class RollupMeasure:
    """One rollup column: ``function(field)`` per sensor and hour of the dataset table."""
    column: str
    function: str                  # count | sum | min | max (ClickHouse aggregate of the same name)
    field: str


@dataclass(frozen=True)
class WarehouseRollup:
    """The hourly rollup of one dataset table and the materialized view that keeps it current.

    Keyed by (sensor_id, hour UTC, backfilled); per field the non-null count, per numeric field
    also sum, min and max, each a SimpleAggregateFunction, so AggregatingMergeTree folds rows of
    the same key on merge and any read that aggregates again gets the same answer before and
    after merges. ``backfilled`` tells the backfill's rows from the view's, so an interrupted
    backfill can be deleted and run again without counting anything twice.
    """
    database: str
    name: str
    view: str
    source: str
    columns: tuple[WarehouseColumn, ...]
    measures: tuple[RollupMeasure, ...]
    ttl: str
    retention_days: int
    dedup_window: int

    @property
    def column_types(self) -> dict[str, str]:
        return {column.name: column.type for column in self.columns}

    def comment(self, state: RollupState) -> str:
        return tenancy.rollup_comment(self.source, state)

    def ddl(self, state: RollupState) -> str:
        return render("clickhouse/rollup_table.sql.j2", database=self.database, table=self.name,
                      columns=self.columns, ttl=self.ttl, dedup_window=self.dedup_window,
                      comment=self.comment(state))

    def _select(self, cutoff: datetime | None, *, backfill: bool) -> str:
        return render("clickhouse/rollup_select.sql.j2", database=self.database, source=self.source,
                      measures=self.measures, backfilled=int(backfill), final=backfill,
                      cutoff_operator="<" if backfill else ">=",
                      cutoff=None if cutoff is None else tenancy.instant_text(cutoff))

    def view_select(self, state: RollupState) -> str:
        """Until the backfill has run, the view counts only rows stamped at or after the cutoff;
        after it, or over a source that was empty when it was built, every row (a writer may set
        ``ingested_at`` itself)."""
        return self._select(None if state.unfiltered else state.cutoff, backfill=False)

    def view_sql(self, state: RollupState) -> str:
        return render("clickhouse/rollup_view.sql.j2", database=self.database, view=self.view, table=self.name,
                      select=self.view_select(state))

    def modify_view_sql(self, state: RollupState) -> str:
        return render("clickhouse/modify_view_query.sql.j2", database=self.database, view=self.view,
                      select=self.view_select(state))

    def backfill_sql(self, state: RollupState) -> str:
        return render("clickhouse/insert_select.sql.j2", database=self.database, table=self.name,
                      select=self._select(state.cutoff, backfill=True))

    def clear_backfill_sql(self) -> str:
        return render("clickhouse/rollup_clear_backfill.sql.j2", database=self.database, table=self.name)

    def drop_sql(self) -> tuple[str, str]:
        """View first: an insert must never find a view without its table."""
        return (render("clickhouse/drop_table.sql.j2", database=self.database, table=self.view),
                render("clickhouse/drop_table.sql.j2", database=self.database, table=self.name))

    def comment_sql(self, state: RollupState) -> str:
        return render("clickhouse/modify_comment.sql.j2", database=self.database, table=self.name,
                      comment=self.comment(state))

    def modify_ttl_sql(self) -> str:
        return render("clickhouse/modify_ttl.sql.j2", database=self.database, table=self.name, ttl=self.ttl)

    def add_column_sql(self, column: WarehouseColumn) -> str:
        return render("clickhouse/add_column.sql.j2", database=self.database, table=self.name, column=column)


@dataclass(frozen=True)
class WarehouseTable:
    database: str
    name: str
    tool: str
    dataset: str
    topic: str
    columns: tuple[WarehouseColumn, ...]
    engine: str
    partition_by: str
    order_by: tuple[str, ...]
    ttl: str
    retention_days: int
    ddl: str
    rollup: WarehouseRollup | None = None

    @property
    def column_types(self) -> dict[str, str]:
        return {column.name: column.type for column in self.columns}

    def modify_ttl_sql(self) -> str:
        return render("clickhouse/modify_ttl.sql.j2", database=self.database, table=self.name, ttl=self.ttl)

    def add_column_sql(self, column: WarehouseColumn) -> str:
        return render("clickhouse/add_column.sql.j2", database=self.database, table=self.name, column=column)


@dataclass(frozen=True, order=True)
class WarehouseGrant:
    grantee: str
    database: str
    table: str | None
    privileges: tuple[str, ...]


def grant_sql(grantee: str, database: str, table: str | None, privilege: str) -> str:
    return render("clickhouse/grant.sql.j2", grantee=grantee, database=database, table=table, privileges=(privilege,))


def revoke_sql(grantee: str, database: str | None, table: str | None, privilege: str) -> str:
    """Revoke one privilege; ``database`` None revokes a global grant (``ON *.*``)."""
    if database is None:
        return render("clickhouse/revoke_global.sql.j2", grantee=grantee, privilege=privilege)
    return render("clickhouse/revoke.sql.j2", grantee=grantee, database=database, table=table, privilege=privilege)


@dataclass(frozen=True)
class WarehouseAccess:
    """User, role, grants and quota for a ClickHouse server. The embedded engine
    (chDB) has no access control: there the API must enforce all of this."""
    user: str
    role: str
    quota: str
    queries_per_hour: int
    grants: tuple[WarehouseGrant, ...]
    password_key: str              # key in the tenant Secret
    legacy_role: str | None = None  # the role's name before naming.warehouse_role changed; dropped on delete

    @property
    def errors_per_hour(self) -> int:
        return self.queries_per_hour * ERRORS_PER_HOUR_FACTOR

    def role_sql(self) -> str:
        return render("clickhouse/role.sql.j2", role=self.role)

    def quota_sql(self) -> str:
        """The quota with its limits, bound to the role (replaces whatever the quota was)."""
        return render("clickhouse/quota.sql.j2", quota=self.quota, role=self.role,
                      queries_per_hour=self.queries_per_hour, errors_per_hour=self.errors_per_hour)

    def privileges(self) -> set[tuple[str, str, str | None, str]]:
        """(grantee, database, table or None, privilege), one per privilege, as ``system.grants`` lists them."""
        return {(grant.grantee, grant.database, grant.table, privilege)
                for grant in self.grants for privilege in grant.privileges}

    def user_sql(self, password: str, database: str) -> tuple[str, ...]:
        """The user, identified by the SHA-256 of the password so the password itself
        never travels in SQL (nor in the server's query log)."""
        digest = hashlib.sha256(password.encode()).hexdigest()
        return (render("clickhouse/user.sql.j2", user=self.user, password_sha256=digest, role=self.role,
                       database=database),
                render("clickhouse/grant_role.sql.j2", role=self.role, user=self.user))


@dataclass(frozen=True)
class WarehousePart:
    database: str
    database_sql: str
    tables: tuple[WarehouseTable, ...]
    access: WarehouseAccess

    def table(self, name: str) -> WarehouseTable:
        return next(table for table in self.tables if table.name == name)


# Runtime ----------------------------------------------------------------------

@dataclass(frozen=True)
class KubeObject:
    api_version: str
    kind: str
    name: str
    namespace: str | None
    manifest: dict[str, Any]

    @property
    def key(self) -> tuple[str, str, str | None, str]:
        return (self.api_version, self.kind, self.namespace, self.name)


@dataclass(frozen=True)
class SecretRef:
    namespace: str
    name: str
    keys: tuple[str, ...]


@dataclass(frozen=True)
class RuntimePart:
    namespace: str
    labels: dict[str, str]
    objects: tuple[KubeObject, ...]  # in apply order: namespace first
    secret: SecretRef

    def get(self, kind: str, name: str) -> KubeObject:
        return next(obj for obj in self.objects if obj.kind == kind and obj.name == name)


# The whole ----------------------------------------------------------------------

@dataclass(frozen=True)
class DesiredState:
    slug: str
    generation: int | None
    suspended: bool
    quotas: Quotas
    identity: IdentityPart
    streaming: StreamingPart
    warehouse: WarehousePart
    runtime: RuntimePart
    tools: tuple[str, ...] = field(default=())
    messaging: Any = None          # provisioners.messaging.MessagingPart: the MQTT broker's client and roles

    def created_names(self) -> dict[str, Any]:
        """What ``status.names`` reports (camelCase, as in the CRD)."""
        return {
            "namespace": self.runtime.namespace,
            "database": self.warehouse.database,
            "realm": self.identity.realm,
            "organization": self.identity.organization.alias if self.identity.organization else None,
            "kafkaUser": self.streaming.user,
            "secret": self.runtime.secret.name,
            "topics": [topic.name for topic in self.streaming.topics],
            "tables": [table.name for table in self.warehouse.tables],
        }


def plan(municipality: Municipality, tools: Iterable[CityTool] | Mapping[str, CityTool], *,
         mail: RealmMail | None = None, endpoints: ToolEndpoints | None = None) -> DesiredState:
    """The desired state of every backend for ``municipality`` with the CityTools it enables.

    ``tools`` may hold more CityTools than the municipality enables; only the
    enabled ones count. Raises MissingToolError for an enabled tool that is not
    among them and PlanError for a spec that exceeds its plan or shares what it
    does not have. ``mail``: the relay the realm sends its e-mail through (None: the
    realm's mail settings are left alone).
    """
    catalogue = dict(tools) if isinstance(tools, Mapping) else {tool.name: tool for tool in tools}
    enabled = _enabled_tools(municipality, catalogue)
    quotas = municipality.spec.plan.quotas()
    datasets = tuple((tool, dataset) for tool in enabled for dataset in tool.spec.datasets)
    _check_shares(municipality, enabled)
    return DesiredState(
        slug=municipality.slug,
        generation=municipality.metadata.generation,
        suspended=municipality.spec.suspended,
        quotas=quotas,
        identity=_identity(municipality, enabled, mail),
        streaming=_streaming(municipality, datasets, quotas),
        warehouse=_warehouse(municipality, datasets, quotas),
        runtime=_runtime(municipality, enabled, quotas, endpoints),
        tools=tuple(tool.name for tool in enabled),
        messaging=messaging_part(municipality, [(tool.name, dataset.name) for tool, dataset in datasets]),
    )


def _enabled_tools(municipality: Municipality, catalogue: Mapping[str, CityTool]) -> tuple[CityTool, ...]:
    missing = [(index, ref.name) for index, ref in enumerate(municipality.spec.tools) if ref.name not in catalogue]
    if missing:
        listed = ", ".join(f"spec.tools.{index} {name!r}" for index, name in missing)
        raise MissingToolError(f"{listed}: no CityTool of that name exists; apply it first or remove it from spec.tools")
    return tuple(catalogue[ref.name] for ref in municipality.spec.tools)


def _check_shares(municipality: Municipality, enabled: tuple[CityTool, ...]) -> None:
    by_name = {tool.name: tool for tool in enabled}
    for index, share in enumerate(municipality.spec.shares):
        tool = by_name.get(share.tool)
        if tool is None:
            raise PlanError(f"spec.shares.{index}: tool {share.tool!r} is not enabled; enable it in spec.tools "
                            f"or remove the share")
        if tool.dataset(share.dataset) is None:
            known = ", ".join(dataset.name for dataset in tool.spec.datasets) or "none"
            raise PlanError(f"spec.shares.{index}: tool {share.tool!r} has no dataset {share.dataset!r} "
                            f"(it has: {known})")
        if municipality.slug in share.municipalities:
            raise PlanError(f"spec.shares.{index}: a municipality cannot share with itself; "
                            f"remove {municipality.slug!r} from municipalities")


def _retention_days(municipality: Municipality, dataset: Dataset) -> int:
    return municipality.spec.retention_days or dataset.retention_days


# Identity ---------------------------------------------------------------------

_PLATFORM_ROLE_DEFINITIONS = (
    KeycloakRole("gov-viewer", "Municipal staff: read dashboards and data of the municipality."),
    KeycloakRole("gov-editor", "Municipal staff: build dashboards, upload data.", ("gov-viewer",)),
    KeycloakRole("gov-admin", "Municipal administrator: users, sharing, City Tools.", ("gov-editor",)),
    KeycloakRole("citizen", "Citizen with an account in the Citizen Hub."),
)


def _identity(municipality: Municipality, enabled: tuple[CityTool, ...], mail: RealmMail | None = None) -> IdentityPart:
    slug, spec = municipality.slug, municipality.spec
    active = not spec.suspended
    dedicated = spec.identity.strategy is IdentityStrategy.realm
    realm = naming.realm(slug) if dedicated else naming.SHARED_REALM
    scopes = () if dedicated else ("organization",)
    api = naming.client(slug, "api")

    def hub(app: str, display: str) -> KeycloakClient:
        return KeycloakClient(client_id=naming.client(slug, app), name=f"{display} – {spec.display_name}",
                              kind=app, public=True, enabled=active, standard_flow=True, service_account=False,
                              pkce=True, audiences=(api,), default_scopes=scopes)

    clients = [
        hub("gov-hub", "Urban Gov Hub"),
        hub("citizen-hub", "Urban Citizen Hub"),
        KeycloakClient(client_id=api, name=f"Urban Data Hub API – {spec.display_name}", kind="api", public=False,
                       enabled=active, standard_flow=False, service_account=False, pkce=False,
                       default_scopes=scopes),
    ]
    for tool in enabled:
        client_id = naming.tool_client(slug, tool.name)
        clients.append(KeycloakClient(
            client_id=client_id, name=f"{tool.spec.display_name} – {spec.display_name}", kind="tool", public=False,
            enabled=active, standard_flow=False, service_account=True, pkce=False, audiences=(api,),
            client_roles=tuple(KeycloakRole(role, f"{tool.spec.display_name}: {role}") for role in tool.spec.roles),
            default_scopes=scopes, secret_key=_client_secret_key(tool.name)))

    users = tuple(KeycloakUser(username=email, email=email, enabled=active, realm_roles=("gov-admin",),
                               required_actions=ADMIN_REQUIRED_ACTIONS) for email in spec.admins)
    organization = None if dedicated else KeycloakOrganization(
        alias=naming.organization(slug), name=spec.display_name, enabled=active,
        domains=tuple(sorted(spec.identity.domains)),
        attributes={"ags": (spec.ags,), "slug": (slug,)})
    realm_settings = render_yaml("keycloak/realm.yaml.j2", realm=realm,
                                 display_name=spec.display_name if dedicated else "Urban Stack",
                                 enabled=active or not dedicated, organizations=not dedicated,
                                 smtp=mail.realm_value() if mail is not None else None,
                                 login_theme=keycloak_theme.name())
    return IdentityPart(strategy=spec.identity.strategy, realm=realm, owns_realm=dedicated,
                        realm_settings=realm_settings, organization=organization, roles=_PLATFORM_ROLE_DEFINITIONS,
                        clients=tuple(clients), users=users)


def _client_secret_key(tool: str) -> str:
    return f"tool-{tool}-client-secret"


# Streaming --------------------------------------------------------------------

def _streaming(municipality: Municipality, datasets: tuple[tuple[CityTool, Dataset], ...],
               quotas: Quotas) -> StreamingPart:
    slug = municipality.slug
    topics = [KafkaTopic(name=naming.topic(slug, tool.name, dataset.name), partitions=dataset.partitions,
                         config=_topic_config(_retention_days(municipality, dataset)),
                         tool=tool.name, dataset=dataset.name)
              for tool, dataset in datasets]
    topics.append(KafkaTopic(name=naming.dlq_topic(slug), partitions=DLQ_PARTITIONS,
                             config=_topic_config(DLQ_RETENTION_DAYS)))
    needed = sum(topic.partitions for topic in topics)
    if needed > quotas.partitions:
        raise PlanError(f"the enabled tools need {needed} Kafka partitions, plan {municipality.spec.plan.name.value!r} "
                        f"allows {quotas.partitions}; raise spec.plan.partitions or choose a larger plan")

    prefix, principal = naming.topic_prefix(slug), naming.kafka_principal(slug)
    topic_operations = _READ_OPERATIONS if municipality.spec.suspended else _READ_OPERATIONS + _WRITE_OPERATIONS
    acls = [KafkaAcl("TOPIC", "PREFIXED", prefix, principal, operation) for operation in topic_operations]
    acls += [KafkaAcl("GROUP", "PREFIXED", prefix, principal, operation) for operation in ("READ", "DESCRIBE")]
    acls += _share_acls(municipality)
    return StreamingPart(user=naming.kafka_user(slug), principal=principal, mechanism="SCRAM-SHA-512",
                         topic_prefix=prefix, topics=tuple(topics), dlq_topic=naming.dlq_topic(slug),
                         acls=tuple(sorted(acls)), password_key="kafka-password")


def _share_acls(municipality: Municipality) -> list[KafkaAcl]:
    """Read access for the municipalities a dataset is shared with: READ and DESCRIBE on exactly
    that topic (LITERAL), granted to the other tenant's principal. They belong to the sharing
    municipality's plan (it owns the topic), so taking a share out of ``spec.shares`` revokes them.
    A neighbour's tools find the topics shared with them by listing the topics they may describe."""
    acls = []
    for share in municipality.spec.shares:
        topic = naming.topic(municipality.slug, share.tool, share.dataset)
        for other in share.municipalities:
            acls += [KafkaAcl("TOPIC", "LITERAL", topic, naming.kafka_principal(other), operation)
                     for operation in ("READ", "DESCRIBE")]
    return acls


def _topic_config(retention_days: int) -> dict[str, str]:
    return {"retention.ms": str(retention_days * _MS_PER_DAY), "cleanup.policy": "delete"}


# Warehouse --------------------------------------------------------------------

_STANDARD_COLUMNS = tuple(WarehouseColumn(column.name, column.type, default=column.default, comment=column.comment)
                          for column in tenancy.STANDARD_COLUMNS)


def _column(spec: DatasetField) -> WarehouseColumn:
    base = ColumnType(spec.type).value
    comment = " ".join(part for part in (spec.description, f"[{spec.unit}]" if spec.unit else "") if part)
    return WarehouseColumn(spec.name, base if spec.required else f"Nullable({base})", comment=comment or None)


def _warehouse(municipality: Municipality, datasets: tuple[tuple[CityTool, Dataset], ...],
               quotas: Quotas) -> WarehousePart:
    slug = municipality.slug
    database = naming.database(slug)
    tables = tuple(_table(municipality, database, tool, dataset) for tool, dataset in datasets)
    role = naming.warehouse_role(slug)
    privileges = ("SELECT",) if municipality.spec.suspended else ("SELECT", "INSERT")
    own = WarehouseGrant(role, database, None, privileges)
    shared = []
    for share in municipality.spec.shares:
        table = naming.table(share.tool, share.dataset)
        grantees = [naming.warehouse_role(other) for other in share.municipalities]
        if share.public:
            grantees.append(naming.PUBLIC_WAREHOUSE_ROLE)
        readable = (table, naming.rollup_table(share.tool, share.dataset))
        shared += [WarehouseGrant(grantee, database, name, ("SELECT",)) for grantee in grantees for name in readable]
    access = WarehouseAccess(user=naming.warehouse_user(slug), role=role, quota=naming.warehouse_quota(slug),
                             queries_per_hour=quotas.queries_per_hour, grants=(own, *sorted(set(shared))),
                             password_key="warehouse-password", legacy_role=naming.legacy_warehouse_role(slug))
    return WarehousePart(database=database, database_sql=render("clickhouse/database.sql.j2", database=database),
                         tables=tables, access=access)


def _table(municipality: Municipality, database: str, tool: CityTool, dataset: Dataset) -> WarehouseTable:
    name = naming.table(tool.name, dataset.name)
    columns = _STANDARD_COLUMNS + tuple(_column(spec) for spec in dataset.fields)
    days = _retention_days(municipality, dataset)
    # event_id last: rows with the same event replace each other without changing the sort order users rely on.
    order_by = tuple(dataset.sort_key) + (() if "event_id" in dataset.sort_key else ("event_id",))
    engine = "ReplacingMergeTree(ingested_at)"
    partition_by = f"toYYYYMM({quote_identifier('observed_at')})"
    ttl = tenancy.table_ttl(days)
    comment = f"{tool.spec.display_name} {tool.spec.version}: {dataset.description or dataset.name}"
    ddl = render("clickhouse/table.sql.j2", database=database, table=name, columns=columns, engine=engine,
                 partition_by=partition_by, order_by=order_by, ttl=ttl, dedup_window=DEDUPLICATION_WINDOW,
                 comment=comment)
    return WarehouseTable(database=database, name=name, tool=tool.name, dataset=dataset.name,
                          topic=naming.topic(municipality.slug, tool.name, dataset.name), columns=columns,
                          engine=engine, partition_by=partition_by, order_by=order_by, ttl=ttl,
                          retention_days=days, ddl=ddl, rollup=_rollup(database, name, tool, dataset, days))


_ROLLUP_KEY = (
    WarehouseColumn("sensor_id", "String"),
    WarehouseColumn("hour", "DateTime('UTC')", comment="Start of the UTC hour the observations fall in."),
    WarehouseColumn("backfilled", "UInt8", comment="1: counted by the one-off backfill, 0: by the view."),
    WarehouseColumn("rows", "SimpleAggregateFunction(sum, UInt64)", comment="Events in the hour."),
)
_SIGNED = {ColumnType.int8, ColumnType.int16, ColumnType.int32, ColumnType.int64}
_UNSIGNED = {ColumnType.uint8, ColumnType.uint16, ColumnType.uint32, ColumnType.uint64}
_FLOATS = {ColumnType.float32, ColumnType.float64}


def _rollup_columns(spec: DatasetField) -> list[tuple[WarehouseColumn, RollupMeasure]]:
    """Rollup columns of one field, typed like ClickHouse types ``count``/``sum``/``min``/``max`` of it.

    A field added later reads, for hours rolled up before, what the table's own rows read for it:
    NULL if it is Nullable, else the type's default, which ``count`` then counts for every row.
    """
    kind = ColumnType(spec.type)
    nullable = (lambda t: t) if spec.required else (lambda t: f"Nullable({t})")
    count_column = naming.rollup_column(spec.name, "count")
    result = [(WarehouseColumn(count_column, "SimpleAggregateFunction(sum, UInt64)",
                               default="rows" if spec.required else None),
               RollupMeasure(count_column, "count", spec.name))]
    if kind in _SIGNED or kind in _UNSIGNED or kind in _FLOATS:
        sum_type = "Int64" if kind in _SIGNED else "UInt64" if kind in _UNSIGNED else "Float64"
        for part, value_type in (("sum", sum_type), ("min", kind.value), ("max", kind.value)):
            column = naming.rollup_column(spec.name, part)
            result.append((WarehouseColumn(column, f"SimpleAggregateFunction({part}, {nullable(value_type)})"),
                           RollupMeasure(column, part, spec.name)))
    return result


def _rollup(database: str, source: str, tool: CityTool, dataset: Dataset, days: int) -> WarehouseRollup:
    per_field = [pair for spec in dataset.fields for pair in _rollup_columns(spec)]
    ttl = tenancy.rollup_ttl(days)
    return WarehouseRollup(database=database, name=naming.rollup_table(tool.name, dataset.name),
                           view=naming.rollup_view(tool.name, dataset.name), source=source,
                           columns=_ROLLUP_KEY + tuple(column for column, _ in per_field),
                           measures=tuple(measure for _, measure in per_field), ttl=ttl, retention_days=days,
                           dedup_window=DEDUPLICATION_WINDOW)


# Runtime ----------------------------------------------------------------------

def _runtime(municipality: Municipality, enabled: tuple[CityTool, ...], quotas: Quotas,
             endpoints: ToolEndpoints | None = None) -> RuntimePart:
    slug, spec = municipality.slug, municipality.spec
    namespace = naming.namespace(slug)
    labels = {LABEL_MANAGED_BY: MANAGED_BY, LABEL_MUNICIPALITY: naming.label_value(slug), LABEL_AGS: spec.ags}
    namespace_labels = {**labels, "pod-security.kubernetes.io/enforce": "restricted"}
    common = {"namespace": namespace, "labels": labels}
    manifests = [
        render_yaml("kubernetes/namespace.yaml.j2", namespace=namespace, labels=namespace_labels,
                    display_name=spec.display_name),
        # Before anything else in the namespace: the operator's only rights there come from it.
        rbac.tenant_role_binding(namespace, labels),
        render_yaml("kubernetes/resourcequota.yaml.j2", name="tenant-quota", cpu=quotas.cpu, memory=quotas.memory,
                    **common),
        render_yaml("kubernetes/limitrange.yaml.j2", name="tenant-limits", cpu=quotas.cpu, memory=quotas.memory,
                    default_limits={"cpu": "500m", "memory": "256Mi"},
                    default_requests={"cpu": "50m", "memory": "64Mi"}, **common),
        render_yaml("kubernetes/networkpolicy-default-deny.yaml.j2", name="default-deny", **common),
        render_yaml("kubernetes/networkpolicy-allow-platform.yaml.j2", name="allow-platform",
                    platform_selector=PLATFORM_NAMESPACE_SELECTOR, **common),
    ]
    secret = naming.credentials_secret(slug)
    settings_by_tool = {ref.name: ref.settings for ref in spec.tools}
    for tool in enabled:
        if tool.spec.image:
            manifests += _tool_workload(municipality, tool, settings_by_tool[tool.name], namespace, labels, secret,
                                        endpoints)
    secret_keys = ("kafka-username", "kafka-password", "warehouse-username", "warehouse-password", "mqtt-password",
                   *(_client_secret_key(tool.name) for tool in enabled))
    objects = tuple(KubeObject(api_version=manifest["apiVersion"], kind=manifest["kind"],
                               name=manifest["metadata"]["name"], namespace=manifest["metadata"].get("namespace"),
                               manifest=manifest) for manifest in manifests)
    return RuntimePart(namespace=namespace, labels=namespace_labels, objects=objects,
                       secret=SecretRef(namespace=namespace, name=secret, keys=secret_keys))


def _tool_workload(municipality: Municipality, tool: CityTool, settings: dict[str, Any], namespace: str,
                   tenant_labels: dict[str, str], secret: str,
                   endpoints: ToolEndpoints | None = None) -> list[dict[str, Any]]:
    name = naming.tool_workload(tool.name)
    selector = {LABEL_MUNICIPALITY: tenant_labels[LABEL_MUNICIPALITY], LABEL_TOOL: naming.label_value(tool.name)}
    labels = {**tenant_labels, **selector, "app.kubernetes.io/name": naming.label_value(tool.name),
              "app.kubernetes.io/version": naming.label_value(tool.spec.version)}
    settings_json = json.dumps(settings, ensure_ascii=False, sort_keys=True, indent=2)
    configmap = naming.tool_settings_configmap(tool.name)
    env = [
        {"name": "URBANSTACK_MUNICIPALITY", "value": municipality.slug},
        {"name": "URBANSTACK_AGS", "value": municipality.spec.ags},
        {"name": "URBANSTACK_TOOL", "value": tool.name},
        {"name": "URBANSTACK_TOOL_SETTINGS", "value": f"{SETTINGS_DIR}/settings.json"},
        {"name": "URBANSTACK_CLIENT_ID", "value": naming.tool_client(municipality.slug, tool.name)},
        {"name": "URBANSTACK_CLIENT_SECRET",
         "valueFrom": {"secretKeyRef": {"name": secret, "key": _client_secret_key(tool.name)}}},
        # The tenant's Kafka identity: its ACLs allow its own topics and the topics shared with it.
        {"name": "URBANSTACK_KAFKA_USERNAME", "valueFrom": {"secretKeyRef": {"name": secret, "key": "kafka-username"}}},
        {"name": "URBANSTACK_KAFKA_PASSWORD", "valueFrom": {"secretKeyRef": {"name": secret, "key": "kafka-password"}}},
        *(endpoints.env() if endpoints is not None else ()),
        *({"name": var.name, "value": var.value} for var in tool.spec.env),
    ]
    resources = tool.spec.resources.model_dump(exclude_none=True)
    common = {"name": name, "namespace": namespace, "labels": labels, "selector": selector}
    return [
        render_yaml("kubernetes/tool-settings.yaml.j2", name=configmap, namespace=namespace, labels=labels,
                    settings_json=settings_json),
        render_yaml("kubernetes/tool-deployment.yaml.j2", replicas=0 if municipality.spec.suspended else 1,
                    image=tool.spec.image, port=tool.spec.port, env=env, resources=resources,
                    health_path=tool.spec.health_path, settings_dir=SETTINGS_DIR, settings_configmap=configmap,
                    settings_sha256=hashlib.sha256(settings_json.encode()).hexdigest(), **common),
        render_yaml("kubernetes/tool-service.yaml.j2", **common),
    ]
