"""Every backend name of a tenant, derived from its slug and nothing else.

The slug is the Municipality's ``metadata.name``. Kubernetes keeps those unique
for a cluster-scoped kind, so names derived injectively from it cannot collide
between tenants. The rules that keep the derivation injective:

- slugs and tool names are lowercase letters, digits and single hyphens; dataset
  names are lowercase letters, digits and single underscores;
- separators never occur inside a part (``.`` in topics, ``__`` in table names,
  ``--`` in tool client ids and ``__`` in role names, which slugs and tool names
  cannot contain because they allow only single hyphens);
- within one backend namespace (ClickHouse users and roles share one: a ``GRANT``
  to a name that is both goes to the user) a fixed suffix never turns one
  tenant's name into another's: the suffix sits behind a separator no slug has;
- a name that would exceed a backend's length limit keeps a readable prefix and
  ends in ``--`` and a hash of the full name, so it stays stable and distinct.

Renaming ``displayName`` never renames anything: names depend on the slug only.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

SLUG_PATTERN = r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$"
DATASET_PATTERN = r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$"
SLUG_MAX_LENGTH = 63

SHARED_REALM = "urbanstack"
DNS_LABEL_MAX = 63
KUBERNETES_NAME_MAX = 253
KAFKA_TOPIC_MAX = 249
KEYCLOAK_NAME_MAX = 255
CLICKHOUSE_IDENTIFIER_MAX = 206  # file names under the data path stay below 255 bytes

_TRANSLITERATION = str.maketrans({
    "ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "Ä": "ae", "Ö": "oe", "Ü": "ue", "ẞ": "ss",
    "æ": "ae", "ø": "oe", "å": "aa", "œ": "oe", "ł": "l", "Ł": "l", "đ": "d", "Đ": "d",
})
_HASH_LENGTH = 8


def slugify(display_name: str) -> str:
    """The slug a display name suggests: ``Rheda-Wiedenbrück`` → ``rheda-wiedenbrueck``.

    German umlauts and ß are transliterated the German way (ü → ue) before any
    other accent is stripped (Sorbian ``Budyšin`` → ``budysin``). Official names
    from the municipality directory carry a suffix after a comma (``Gütersloh,
    Stadt``) that is not part of the name, so it is dropped.
    """
    name = display_name.split(",", 1)[0].translate(_TRANSLITERATION)
    ascii_only = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_only.lower()).strip("-")
    slug = re.sub(r"^[0-9-]+", "", slug)
    if not slug:
        raise ValueError(f"cannot derive a slug from {display_name!r}: it has no letters")
    return fit(slug, SLUG_MAX_LENGTH)


def is_slug(value: str) -> bool:
    return len(value) <= SLUG_MAX_LENGTH and re.fullmatch(SLUG_PATTERN, value) is not None


def fit(name: str, limit: int, separator: str = "-") -> str:
    """``name`` if it fits ``limit``, else a prefix plus a stable hash of the full name.

    The hash follows a doubled separator (``--``), which no name built from slugs and tool
    names holds where ``fit`` can shorten it (DNS labels: ``muni-<slug>``, ``tool-<tool>``),
    so a shortened name never equals another tenant's unshortened one. With a single ``-``
    a 58-character slug chosen as ``<prefix>-<hash>`` took a long slug's namespace. (No
    slug of the Destatis directory is long enough to be shortened: the longest has 49.)"""
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:_HASH_LENGTH]
    marker = separator * 2
    prefix = name[: limit - _HASH_LENGTH - len(marker)].rstrip("-_.")
    return f"{prefix}{marker}{digest}"


def _underscored(name: str) -> str:
    return name.replace("-", "_")


# Kubernetes -----------------------------------------------------------------

def namespace(slug: str) -> str:
    return fit(f"muni-{slug}", DNS_LABEL_MAX)


def label_value(value: str) -> str:
    return fit(value, DNS_LABEL_MAX)


def credentials_secret(slug: str) -> str:
    """The Secret (in the tenant's namespace) holding every credential of the tenant."""
    return fit(f"{slug}-credentials", KUBERNETES_NAME_MAX)


def tool_workload(tool: str) -> str:
    """Deployment and Service name of a tool inside the tenant namespace (a DNS-1035 label)."""
    return fit(f"tool-{tool}", DNS_LABEL_MAX)


def tool_settings_configmap(tool: str) -> str:
    return fit(f"tool-{tool}-settings", KUBERNETES_NAME_MAX)


# Kafka ----------------------------------------------------------------------

def topic_prefix(slug: str) -> str:
    """Every topic and consumer group of a tenant starts with this; the dot keeps
    ``bad`` from matching ``bad-oeynhausen``'s topics."""
    return f"{slug}."


def topic(slug: str, tool: str, dataset: str) -> str:
    return fit(f"{topic_prefix(slug)}{tool}.{dataset}", KAFKA_TOPIC_MAX)


def dlq_topic(slug: str) -> str:
    return f"{topic_prefix(slug)}dlq"


def kafka_user(slug: str) -> str:
    return f"muni-{slug}"


def kafka_principal(slug: str) -> str:
    return f"User:{kafka_user(slug)}"


# ClickHouse -----------------------------------------------------------------

def database(slug: str) -> str:
    return fit(_underscored(slug), CLICKHOUSE_IDENTIFIER_MAX, "_")


def table(tool: str, dataset: str) -> str:
    """``<tool>__<dataset>``: two tools may both have a ``weather`` dataset."""
    return fit(f"{_underscored(tool)}__{dataset}", CLICKHOUSE_IDENTIFIER_MAX, "_")


def warehouse_user(slug: str) -> str:
    return fit(f"muni_{_underscored(slug)}", CLICKHOUSE_IDENTIFIER_MAX, "_")


def warehouse_role(slug: str) -> str:
    """``muni_<slug>__role``. ClickHouse keeps users and roles apart but ``GRANT … TO name``
    picks the user when both exist, so the role must never equal any tenant's user
    ``muni_<slug>``: with one underscore, slug ``x``'s role was slug ``x-role``'s user."""
    return fit(f"muni_{_underscored(slug)}__role", CLICKHOUSE_IDENTIFIER_MAX, "_")


def legacy_warehouse_role(slug: str) -> str:
    """The role name used before ``warehouse_role`` got its double underscore; the
    warehouse provisioner drops it once the tenant's user no longer holds it."""
    return fit(f"muni_{_underscored(slug)}_role", CLICKHOUSE_IDENTIFIER_MAX, "_")


PUBLIC_WAREHOUSE_ROLE = "urbanstack_public_reader"
"""Role of the Citizen Hub's open-data reader; public shares grant SELECT to it."""


def warehouse_quota(slug: str) -> str:
    return fit(f"muni_{_underscored(slug)}_quota", CLICKHOUSE_IDENTIFIER_MAX, "_")


# Keycloak -------------------------------------------------------------------

def realm(slug: str) -> str:
    """The dedicated realm of a tenant with ``identity.strategy: realm``."""
    return fit(f"muni-{slug}", KEYCLOAK_NAME_MAX)


def organization(slug: str) -> str:
    """Alias (and name) of the tenant's Organization in the shared realm."""
    return slug


CLIENT_APPS = ("gov-hub", "citizen-hub", "api")
"""The clients every municipality has. ``<slug>-<app>`` is injective as long as no app
is another's ``-``-suffix (``hub`` next to ``gov-hub`` would make ``a-gov`` + ``hub``
equal ``a`` + ``gov-hub``) and no app contains ``--``; tests check both."""


def client(slug: str, app: str) -> str:
    """Client ids carry the slug in both strategies, so a token's audience
    (``guetersloh-api``) names the tenant whichever strategy it uses."""
    if "--" in app:
        raise ValueError(f"a client app name must not contain '--' (tool clients use it): {app!r}")
    return fit(f"{slug}-{app}", KEYCLOAK_NAME_MAX)


TOOL_CLIENT_SEPARATOR = "--tool-"


def tool_client(slug: str, tool: str) -> str:
    """``<slug>--tool-<tool>``. Slugs and tool names never contain ``--``, so the id splits
    back into exactly one (slug, tool) and never equals a ``client(slug, app)`` id, which has
    no ``--``. The earlier ``<slug>-tool-<tool>`` did collide: tool ``api`` of ``a`` and the
    API client of ``a-tool`` were both ``a-tool-api``."""
    return fit(f"{slug}{TOOL_CLIENT_SEPARATOR}{tool}", KEYCLOAK_NAME_MAX)


def legacy_tool_client(slug: str, tool: str) -> str:
    """The tool client id before the ``--`` separator. The identity provisioner deletes such a
    client of the tenant as unplanned (it carries the tenant attribute) and creates the new one
    with the same secret from the tenant Secret."""
    return fit(f"{slug}-tool-{tool}", KEYCLOAK_NAME_MAX)


def split_tool_client(client_id: str) -> tuple[str, str] | None:
    """(slug, tool) of a tool client id, or None if it is none."""
    slug, separator, tool = client_id.partition(TOOL_CLIENT_SEPARATOR)
    if not separator or not is_slug(slug) or not is_slug(tool) or tool_client(slug, tool) != client_id:
        return None
    return slug, tool


def rollup_table(tool: str, dataset: str) -> str:
    """``<tool>__<dataset>__hourly``: the hourly rollup of a dataset table. Base table names hold
    exactly one ``__`` (dataset names have single underscores only), so no rollup name equals one."""
    return fit(f"{_underscored(tool)}__{dataset}__hourly", CLICKHOUSE_IDENTIFIER_MAX, "_")


def rollup_view(tool: str, dataset: str) -> str:
    """The materialized view that feeds every insert into a dataset table to its hourly rollup."""
    return fit(f"{_underscored(tool)}__{dataset}__hourly_mv", CLICKHOUSE_IDENTIFIER_MAX, "_")


ROLLUP_PARTS = ("count", "sum", "min", "max")
"""What the rollup keeps per field and hour: non-null count (every field), sum, min and max (numbers)."""


def rollup_column(field: str, part: str) -> str:
    """``<field>__<part>``. Field names never contain ``__``, so these cannot clash with each other
    or with the rollup's own columns (``sensor_id``, ``hour``, ``backfilled``, ``rows``)."""
    if part not in ROLLUP_PARTS:
        raise ValueError(f"rollup part must be one of {ROLLUP_PARTS}, got {part!r}")
    return f"{field}__{part}"
