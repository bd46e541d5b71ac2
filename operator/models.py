"""The ``Municipality`` and ``CityTool`` custom resources as Pydantic models.

These models are the single source of the CRD schemas (``crdgen`` generates
``crds/`` from them) and of the operator's own validation, which is stricter
than what an OpenAPI schema can say (cross-field rules, the municipality
directory). Field names are the camelCase of the manifests.

Use :func:`parse_municipality` / :func:`parse_citytool` on a manifest: they
raise :class:`SpecError` with one line per problem, each naming the field and
what to write instead.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator,
                      model_validator)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from urbanstack.operator import ags as ags_rules
from urbanstack.operator import naming

GROUP = "urbanstack.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

EMAIL_PATTERN = r"^[^@\s]+@[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)+$"
DOMAIN_PATTERN = r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$"
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|Ki|Mi|Gi|Ti|Pi)?$"
VERSION_PATTERN = r"^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
PUBLIC_LICENCE = "dl-de/zero-2-0"

# Columns every observation table has, whatever the tool; dataset fields must not reuse them.
STANDARD_COLUMNS = ("event_id", "source", "sensor_id", "observed_at", "lon", "lat", "ingested_at")
NULLABLE_STANDARD_COLUMNS = ("lon", "lat")
PLATFORM_ROLES = ("gov-admin", "gov-editor", "gov-viewer", "citizen")


# ClickHouse's DateTime ends in 2106: a TTL of observed_at + more than ~80 years
# wraps into the past and deletes rows on insert. 50 years keeps a safe margin.
MAX_RETENTION_DAYS = 18_250


class SpecError(ValueError):
    """A manifest that can never be reconciled as written; the message says what to fix."""


def _invalid(message: str) -> PydanticCustomError:
    return PydanticCustomError("invalid_value", "{message}", {"message": message})


def _pattern(pattern: str, max_length: int | None = None) -> Any:
    schema: dict[str, Any] = {"pattern": pattern}
    if max_length:
        schema["maxLength"] = max_length
    return Field(json_schema_extra=schema)


def _check_slug(value: str) -> str:
    if not naming.is_slug(value):
        suggestion = ""
        try:
            suggestion = f" such as {naming.slugify(value)!r}"
        except ValueError:
            pass
        raise _invalid(f"must be lowercase letters, digits and single hyphens, start with a letter and have at "
                       f"most {naming.SLUG_MAX_LENGTH} characters{suggestion}; got {value!r}")
    return value


def _check_dataset_name(value: str) -> str:
    if not re.fullmatch(naming.DATASET_PATTERN, value):
        raise _invalid(f"must be lowercase letters, digits and single underscores, starting with a letter; got {value!r}")
    return value


def _check_ags(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        raise _invalid(f"AGS must be a quoted string of 8 digits, got the number {value}: YAML reads unquoted "
                       f"digits with a leading zero as a number, so write ags: \"0…\"")
    if isinstance(value, str) and (problem := ags_rules.format_error(value)):
        raise _invalid(problem)
    return value


def _check_email(value: str) -> str:
    if not re.fullmatch(EMAIL_PATTERN, value):
        raise _invalid(f"must be an email address like name@example.de, got {value!r}")
    return value.lower()


def _check_quantity(value: Any) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not re.fullmatch(QUANTITY_PATTERN, value):
        raise _invalid(f"must be a Kubernetes quantity like 500m, 2, 512Mi or 10Gi, got {value!r}")
    return value


Slug = Annotated[str, AfterValidator(_check_slug), _pattern(naming.SLUG_PATTERN, naming.SLUG_MAX_LENGTH)]
DatasetName = Annotated[str, AfterValidator(_check_dataset_name), _pattern(naming.DATASET_PATTERN, 63)]
Ags = Annotated[str, BeforeValidator(_check_ags), _pattern(ags_rules.AGS_PATTERN)]
Email = Annotated[str, AfterValidator(_check_email), _pattern(EMAIL_PATTERN, 254)]
Quantity = Annotated[str, BeforeValidator(_check_quantity),
                     Field(json_schema_extra={"x-kubernetes-int-or-string": True})]


class _Spec(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class _Status(BaseModel):
    # Kopf and future versions write fields this version does not know; keep them.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")


# Municipality -----------------------------------------------------------------

class PlanName(str, Enum):
    small = "small"
    medium = "medium"
    large = "large"


class Quotas(_Spec):
    """Resolved limits of a tenant: a preset with the explicit values laid over it."""
    cpu: Quantity
    memory: Quantity
    storage: Quantity
    events_per_day: int
    partitions: int
    queries_per_hour: int


PLAN_PRESETS: dict[PlanName, Quotas] = {
    PlanName.small: Quotas(cpu="2", memory="4Gi", storage="20Gi", events_per_day=1_000_000,
                           partitions=24, queries_per_hour=2_000),
    PlanName.medium: Quotas(cpu="8", memory="16Gi", storage="200Gi", events_per_day=20_000_000,
                            partitions=96, queries_per_hour=20_000),
    PlanName.large: Quotas(cpu="32", memory="64Gi", storage="2Ti", events_per_day=200_000_000,
                           partitions=384, queries_per_hour=200_000),
}


class Plan(_Spec):
    """A preset (``name``) whose limits each field given here overrides."""
    name: PlanName = PlanName.small
    cpu: Quantity | None = Field(None, description="CPU limit of the tenant namespace.")
    memory: Quantity | None = Field(None, description="Memory limit of the tenant namespace.")
    storage: Quantity | None = Field(None, description="Warehouse storage the tenant may use (metered).")
    events_per_day: int | None = Field(None, ge=1, description="Events the tenant may ingest per day.")
    partitions: int | None = Field(None, ge=1, le=10_000, description="Kafka partitions over all tenant topics.")
    queries_per_hour: int | None = Field(None, ge=1, description="Warehouse queries per hour.")

    def quotas(self) -> Quotas:
        overrides = {key: value for key, value in self.model_dump(exclude={"name"}).items() if value is not None}
        return PLAN_PRESETS[self.name].model_copy(update=overrides)


class EnabledTool(_Spec):
    name: Slug = Field(description="metadata.name of a CityTool.")
    settings: dict[str, Any] = Field(default_factory=dict,
                                     description="Tool-specific settings, handed to the tool as JSON.")


class IdentityStrategy(str, Enum):
    organization = "organization"
    realm = "realm"


class Identity(_Spec):
    strategy: IdentityStrategy = Field(
        IdentityStrategy.organization,
        description="organization: one Keycloak Organization in the shared realm (scales to many tenants); "
                    "realm: a dedicated realm for a city that needs its own MFA policy or identity provider.")
    domains: list[Annotated[str, _pattern(DOMAIN_PATTERN, 253)]] = Field(
        default_factory=list, description="Email domains of the municipality's staff, for login discovery.")


class Share(_Spec):
    tool: Slug
    dataset: DatasetName
    municipalities: list[Slug] = Field(default_factory=list, description="Slugs of municipalities that may read it.")
    public: bool = Field(False, description="Publish as open data in the Citizen Hub.")
    licence: Literal["dl-de/zero-2-0"] | None = Field(
        None, description="Required for public shares: Datenlizenz Deutschland – Zero – 2.0.")

    @model_validator(mode="after")
    def _audience(self) -> "Share":
        if not self.public and not self.municipalities:
            raise _invalid(f"share of {self.tool}/{self.dataset} names nobody: list municipalities or set public: true")
        if self.public and self.licence != PUBLIC_LICENCE:
            raise _invalid(f"public share of {self.tool}/{self.dataset} needs licence: {PUBLIC_LICENCE} "
                           f"(open data is published under Datenlizenz Deutschland – Zero – 2.0)")
        return self


class SourceConnector(str, Enum):
    pegelonline = "pegelonline"
    brightsky = "brightsky"
    hystreet = "hystreet"
    sensorthings = "sensorthings"
    dwd = "dwd"


MIN_SOURCE_INTERVAL = 60
URL_PATTERN = r"^https?://[^\s/?#]+[^\s]*$"
SECRET_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"


def _stringify_params(value: Any) -> Any:
    # Query parameters are text; YAML reads ``lat: 51.9`` as a number, which is meant as "51.9".
    if isinstance(value, dict):
        return {key: ("true" if item is True else "false" if item is False else str(item))
                if isinstance(item, (bool, int, float)) else item for key, item in value.items()}
    return value


def _matching(pattern: str, what: str) -> Any:
    def check(value: str) -> str:
        if not re.fullmatch(pattern, value):
            raise _invalid(f"must be {what}; got {value!r}")
        return value
    return AfterValidator(check)


class Source(_Spec):
    """A pull source: fetched every ``intervalSeconds`` by the ingest service, parsed by
    ``connector`` and published to the topic of ``tool``/``dataset``."""
    name: Slug = Field(description="Unique within the municipality; names the source's cursor and status.")
    connector: SourceConnector = Field(description="Parser for the response: pegelonline (stations.json with "
                                                   "current measurements), brightsky (/weather or /current_weather), "
                                                   "hystreet (/locations/{id}/measurements), sensorthings "
                                                   "(Observations, Datastreams or Things), dwd (POI CSV or CDC zip).")
    url: Annotated[str, _matching(URL_PATTERN, "an http:// or https:// URL"), _pattern(URL_PATTERN, 2048)] = Field(
        description="http(s) URL to fetch.")
    tool: Slug = Field(description="An enabled CityTool whose dataset receives the events.")
    dataset: DatasetName
    interval_seconds: int = Field(900, ge=MIN_SOURCE_INTERVAL, le=86_400 * 7,
                                  description="Seconds between fetches (at least 60).")
    params: Annotated[dict[str, str], BeforeValidator(_stringify_params)] = Field(
        default_factory=dict, description="Query parameters added to the URL (connector options such as units "
                                          "or field are read from here too).")
    credential_key: Annotated[str, _matching(SECRET_KEY_PATTERN, "a Secret key (letters, digits, '-', '_', '.')"),
                              _pattern(SECRET_KEY_PATTERN, 253)] | None = Field(
        None, description="Key in the tenant's urbanstack-ingest Secret holding the source's API token "
                          "(hystreet: sent as X-API-Token); the token itself never goes into the spec.")


class DeletionPolicy(str, Enum):
    retain = "Retain"
    delete = "Delete"


class Billing(_Spec):
    """Where the municipality's invoices go (XRechnung, docs/metering.md)."""
    leitweg_id: str = Field(min_length=5, max_length=46, pattern=r"^[0-9]{2,12}(-[A-Za-z0-9]{1,30})?-[0-9]{2}$",
                            description="Leitweg-ID of the invoice recipient, e.g. 04011000-1234512345-06 "
                                        "(Mod 97-10 check digits are verified).")
    name: str | None = Field(None, max_length=200, description="Invoice recipient; default spec.displayName.")
    street: str | None = Field(None, max_length=200)
    postal_code: str | None = Field(None, pattern=r"^[0-9]{5}$")
    city: str | None = Field(None, max_length=100)
    country: str = Field("DE", pattern=r"^[A-Z]{2}$")
    email: Email | None = Field(None, description="Invoice inbox (the buyer's electronic address, BT-49).")

    @field_validator("leitweg_id")
    @classmethod
    def _leitweg(cls, value: str) -> str:
        from . import leitweg

        if (problem := leitweg.problem(value)) is not None:
            raise ValueError(f"billing.leitwegId {value!r}: {problem}")
        return leitweg.normalise(value)


class MunicipalitySpec(_Spec):
    display_name: str = Field(min_length=1, max_length=200)
    ags: Ags = Field(description="Amtlicher Gemeindeschlüssel: 8 digits, quoted in YAML.")
    plan: Plan = Field(default_factory=Plan)
    admins: list[Email] = Field(min_length=1, description="First administrators; they must set a password and OTP.")
    tools: list[EnabledTool] = Field(default_factory=list)
    identity: Identity = Field(default_factory=Identity)
    retention_days: int | None = Field(
        None, ge=1, le=MAX_RETENTION_DAYS,
        description="Overrides every dataset's retention for this municipality (at most 50 years).")
    shares: list[Share] = Field(default_factory=list)
    deletion_policy: DeletionPolicy = Field(
        DeletionPolicy.retain, description="Retain keeps data (database, topics) on deletion; Delete removes it.")
    suspended: bool = Field(False, description="Disable logins and producer access without deleting anything.")
    sources: list[Source] = Field(default_factory=list,
                                  description="Pull sources the ingest service fetches on a schedule.")
    billing: Billing | None = Field(None, description="Leitweg-ID and billing address for the monthly invoices.")

    @model_validator(mode="after")
    def _unique(self) -> "MunicipalitySpec":
        _reject_duplicates("tools", [tool.name for tool in self.tools])
        _reject_duplicates("admins", self.admins)
        _reject_duplicates("sources", [source.name for source in self.sources])
        enabled = {tool.name for tool in self.tools}
        for source in self.sources:
            if source.tool not in enabled:
                raise _invalid(f"source {source.name!r} feeds tool {source.tool!r}, which is not enabled; "
                               f"add it to spec.tools or choose one of {sorted(enabled)}")
        return self


class ConditionStatus(str, Enum):
    true = "True"
    false = "False"
    unknown = "Unknown"


class Condition(_Status):
    type: str
    status: ConditionStatus
    reason: str = Field(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    message: str = ""
    observed_generation: int | None = None
    last_transition_time: str | None = Field(None, description="RFC 3339 time of the last status change.")


class Phase(str, Enum):
    pending = "Pending"
    provisioning = "Provisioning"
    ready = "Ready"
    degraded = "Degraded"
    suspended = "Suspended"
    failed = "Failed"
    deleting = "Deleting"


class CreatedNames(_Status):
    namespace: str | None = None
    database: str | None = None
    realm: str | None = None
    organization: str | None = None
    kafka_user: str | None = None
    secret: str | None = None
    topics: list[str] = Field(default_factory=list)
    tables: list[str] = Field(default_factory=list)


class Usage(_Status):
    events_last_24h: int | None = None
    storage_bytes: int | None = None
    users: int | None = None
    queries_last_24h: int | None = None
    active_users_30d: int | None = Field(None, alias="activeUsers30d",
                                         description="Distinct users with a verified token in the last 30 days.")
    residents: int | None = Field(None, description="Population per the municipality directory.")
    measured_at: str | None = None


class MunicipalityStatus(_Status):
    phase: Phase | None = None
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
    endpoints: dict[str, str] = Field(default_factory=dict)
    names: CreatedNames | None = None
    usage: Usage | None = None


class ObjectMeta(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    name: Slug
    generation: int | None = None
    uid: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class Municipality(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)
    api_version: Literal["urbanstack.io/v1alpha1"] = Field(API_VERSION, alias="apiVersion")
    kind: Literal["Municipality"] = "Municipality"
    metadata: ObjectMeta
    spec: MunicipalitySpec
    status: MunicipalityStatus | None = None

    @property
    def slug(self) -> str:
        return self.metadata.name


# CityTool ---------------------------------------------------------------------

class ColumnType(str, Enum):
    string = "String"
    boolean = "Bool"
    uint8 = "UInt8"
    uint16 = "UInt16"
    uint32 = "UInt32"
    uint64 = "UInt64"
    int8 = "Int8"
    int16 = "Int16"
    int32 = "Int32"
    int64 = "Int64"
    float32 = "Float32"
    float64 = "Float64"
    date = "Date"
    datetime = "DateTime"


class DatasetField(_Spec):
    name: DatasetName
    type: ColumnType
    unit: str | None = Field(None, max_length=32, description="Unit of measurement, e.g. °C, mm, persons.")
    description: str = ""
    required: bool = Field(False, description="Every event has a value; otherwise the column is Nullable.")


class Dataset(_Spec):
    name: DatasetName
    description: str = ""
    fields: list[DatasetField] = Field(min_length=1)
    partitions: int = Field(1, ge=1, le=1_000, description="Kafka partitions of the dataset's topic.")
    retention_days: int = Field(365, ge=1, le=MAX_RETENTION_DAYS,
                                description="Default retention in stream and warehouse (at most 50 years).")
    sort_key: list[str] = Field(default_factory=lambda: ["sensor_id", "observed_at"], min_length=1,
                                description="Columns of the warehouse ORDER BY, most selective last.")

    @model_validator(mode="after")
    def _columns(self) -> "Dataset":
        names = [field.name for field in self.fields]
        _reject_duplicates(f"dataset {self.name!r} fields", names)
        if clashes := sorted(set(names) & set(STANDARD_COLUMNS)):
            raise _invalid(f"dataset {self.name!r} field(s) {clashes} are standard columns every dataset "
                           f"already has ({', '.join(STANDARD_COLUMNS)}); remove them from fields")
        nullable = {field.name for field in self.fields if not field.required} | set(NULLABLE_STANDARD_COLUMNS)
        for column in self.sort_key:
            if column not in names and column not in STANDARD_COLUMNS:
                raise _invalid(f"dataset {self.name!r} sortKey names {column!r}, which is neither a field nor "
                               f"a standard column")
            if column in nullable:
                raise _invalid(f"dataset {self.name!r} sortKey column {column!r} may be empty; "
                               f"mark the field required: true or drop it from sortKey")
        _reject_duplicates(f"dataset {self.name!r} sortKey", self.sort_key)
        return self


class Audience(str, Enum):
    gov = "gov"
    citizen = "citizen"
    both = "both"


class EnvVar(_Spec):
    name: Annotated[str, _pattern(ENV_NAME_PATTERN, 253)]
    value: str


class ResourceAmounts(_Spec):
    cpu: Quantity | None = None
    memory: Quantity | None = None


class Resources(_Spec):
    requests: ResourceAmounts = Field(default_factory=lambda: ResourceAmounts(cpu="50m", memory="64Mi"))
    limits: ResourceAmounts = Field(default_factory=lambda: ResourceAmounts(cpu="500m", memory="256Mi"))


class CityToolSpec(_Spec):
    display_name: str = Field(min_length=1, max_length=200)
    description: str = Field("", description="What the tool does, in English.")
    description_de: str = Field("", description="What the tool does, in German. The hubs show "
                                "the text of the page's language, else the other one marked with its language.")
    version: Annotated[str, _pattern(VERSION_PATTERN, 64)]
    owner: Slug = Field(description="Slug of the municipality that builds and maintains the tool.")
    audience: Audience
    datasets: list[Dataset] = Field(default_factory=list)
    roles: list[Slug] = Field(default_factory=list, description="Tool-specific roles, granted per municipality.")
    image: str | None = Field(None, description="Container image; tools without one run no workload.")
    port: int = Field(8080, ge=1, le=65_535)
    health_path: str = Field("/healthz", pattern=r"^/", description="HTTP path the probes ask.")
    env: list[EnvVar] = Field(default_factory=list)
    resources: Resources = Field(default_factory=Resources)

    @property
    def descriptions(self) -> dict[str, str]:
        """The description by language (``de``, ``en``), only those that are given."""
        return {lang: text for lang, text in (("de", self.description_de), ("en", self.description)) if text}

    @model_validator(mode="after")
    def _unique(self) -> "CityToolSpec":
        _reject_duplicates("datasets", [dataset.name for dataset in self.datasets])
        _reject_duplicates("roles", self.roles)
        if reserved := sorted(set(self.roles) & set(PLATFORM_ROLES)):
            raise _invalid(f"roles {reserved} are platform roles every municipality has; choose tool-specific names")
        if reserved_env := sorted(var.name for var in self.env if var.name.startswith("URBANSTACK_")):
            raise _invalid(f"env {reserved_env}: the URBANSTACK_ prefix is set by the platform")
        return self


class CityToolStatus(_Status):
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
    installed_in: list[str] = Field(default_factory=list, description="Slugs of municipalities that enable it.")


class CityTool(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)
    api_version: Literal["urbanstack.io/v1alpha1"] = Field(API_VERSION, alias="apiVersion")
    kind: Literal["CityTool"] = "CityTool"
    metadata: ObjectMeta
    spec: CityToolSpec
    status: CityToolStatus | None = None

    @property
    def name(self) -> str:
        return self.metadata.name

    def dataset(self, name: str) -> Dataset | None:
        return next((dataset for dataset in self.spec.datasets if dataset.name == name), None)


# Parsing ----------------------------------------------------------------------

def _reject_duplicates(what: str, values: list[str]) -> None:
    seen, duplicates = set(), []
    for value in values:
        if value in seen and value not in duplicates:
            duplicates.append(value)
        seen.add(value)
    if duplicates:
        raise _invalid(f"{what} lists {duplicates} more than once")


def describe_errors(error: ValidationError) -> str:
    """One line per problem: the field path as written in the manifest, then what is wrong."""
    lines = []
    for item in error.errors():
        path = ".".join(str(part) for part in item["loc"])
        lines.append(f"{path}: {item['msg']}" if path else item["msg"])
    return "\n".join(lines)


def parse_municipality(manifest: dict[str, Any],
                       directory: ags_rules.MunicipalityDirectory | None = None) -> Municipality:
    """The validated resource; with a directory the AGS must name a real Gemeinde."""
    try:
        municipality = Municipality.model_validate(manifest)
    except ValidationError as error:
        raise SpecError(describe_errors(error)) from None
    if directory is not None:
        try:
            directory.lookup(municipality.spec.ags)
        except ags_rules.AgsError as error:
            raise SpecError(f"spec.ags: {error}") from None
    return municipality


def parse_citytool(manifest: dict[str, Any]) -> CityTool:
    try:
        return CityTool.model_validate(manifest)
    except ValidationError as error:
        raise SpecError(describe_errors(error)) from None
