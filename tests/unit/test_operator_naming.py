"""Names a platform operator sees in every backend, derived from the slug."""

import pytest

from urbanstack.operator import naming


@pytest.mark.parametrize("display_name, slug", [
    ("Rheda-Wiedenbrück", "rheda-wiedenbrueck"),
    ("Gütersloh, Stadt", "guetersloh"),
    ("Großenrade", "grossenrade"),
    ("Bad Oeynhausen", "bad-oeynhausen"),
    ("Halle (Saale), Stadt", "halle-saale"),
    ("Frankfurt am Main", "frankfurt-am-main"),
    ("Bautzen/Budyšin", "bautzen-budysin"),
    ("Übach-Palenberg", "uebach-palenberg"),
])
def test_slug_survives_umlauts_and_official_suffixes(display_name, slug):
    assert naming.slugify(display_name) == slug
    assert naming.is_slug(slug)


def test_slug_without_letters_is_refused_with_the_input():
    with pytest.raises(ValueError, match="'---'"):
        naming.slugify("---")


def test_names_for_guetersloh():
    assert naming.namespace("guetersloh") == "muni-guetersloh"
    assert naming.database("guetersloh") == "guetersloh"
    assert naming.topic("guetersloh", "pegel-warnung", "water_levels") == "guetersloh.pegel-warnung.water_levels"
    assert naming.dlq_topic("guetersloh") == "guetersloh.dlq"
    assert naming.kafka_principal("guetersloh") == "User:muni-guetersloh"
    assert naming.realm("guetersloh") == "muni-guetersloh"
    assert naming.organization("guetersloh") == "guetersloh"
    assert naming.client("guetersloh", "api") == "guetersloh-api"
    assert naming.credentials_secret("guetersloh") == "guetersloh-credentials"


def test_clickhouse_identifiers_use_underscores():
    assert naming.database("rheda-wiedenbrueck") == "rheda_wiedenbrueck"
    assert naming.warehouse_user("rheda-wiedenbrueck") == "muni_rheda_wiedenbrueck"
    assert naming.table("passantenfrequenz-wetter", "pedestrian_counts") == \
        "passantenfrequenz_wetter__pedestrian_counts"


def test_table_names_of_different_tools_and_datasets_never_collide():
    # "a-b" + "c" and "a" + "b_c" would both be "a_b_c" with a single separator.
    assert naming.table("a-b", "c") != naming.table("a", "b_c")


def test_topic_prefix_of_one_tenant_does_not_cover_another():
    assert not naming.topic("bad-oeynhausen", "t", "d").startswith(naming.topic_prefix("bad"))


def test_long_names_fit_their_limit_with_a_stable_distinct_hash():
    slug = "a" * 60 + "-x"
    other = "a" * 60 + "-y"
    assert len(naming.namespace(slug)) == 63
    assert naming.namespace(slug) == naming.namespace(slug)
    assert naming.namespace(slug) != naming.namespace(other)
    assert naming.namespace(slug).startswith("muni-aaaa")


def test_short_names_are_left_alone():
    assert naming.fit("muni-guetersloh", 63) == "muni-guetersloh"


# Collision-freedom by construction -------------------------------------------------------------
# No property-testing library is a dependency, so a seeded generator draws many slugs, tool and
# dataset names from the same grammar the CRDs allow, biased towards the parts fixed suffixes are
# made of ("tool", "api", "hub", "role", ...) and towards the length limits, where names get
# shortened. Every backend namespace must then map distinct owners to distinct names.

import random  # noqa: E402

from urbanstack.operator.rbac import INGEST_SECRET  # noqa: E402

_WORDS = ("a", "b", "x", "tool", "api", "gov", "hub", "citizen", "role", "quota", "dlq", "muni", "settings",
          "credentials", "client", "secret", "hourly", "mv", "urbanstack", "ingest", "0", "1")


def _name(rng: random.Random, separator: str, limit: int) -> str:
    if rng.random() < 0.15:   # long: shortened names must stay distinct from everything else
        parts = ["a" * rng.randint(20, 40)] + [rng.choice(_WORDS) for _ in range(rng.randint(1, 6))]
        parts.append("".join(rng.choice("0123456789abcdef") for _ in range(8)))
    else:
        parts = [rng.choice(_WORDS) for _ in range(rng.randint(1, 4))]
    if parts[0][0].isdigit():
        parts[0] = "n" + parts[0]
    return separator.join(parts)[:limit].rstrip(separator)


def _assert_injective(owners_by_name: dict, name: str, owner) -> None:
    before = owners_by_name.setdefault(name, owner)
    assert before == owner, f"{name!r} is the name of both {before} and {owner}"


def _universe(seed: int, count: int):
    rng = random.Random(seed)
    slugs = {_name(rng, "-", naming.SLUG_MAX_LENGTH) for _ in range(count)}
    tools = {_name(rng, "-", naming.SLUG_MAX_LENGTH) for _ in range(count // 4)}
    datasets = {_name(rng, "_", 63) for _ in range(count // 8)}
    edge = {"a", "a-tool", "a-tool-x", "x", "x-role", "x-quota", "bad", "bad-oeynhausen", "a-gov", "a-citizen",
            "a" * 58, "a" * 63, "a" * 49 + "-" + "0" * 8, "a" * 49 + "--" + "0" * 8}
    tools |= {"api", "x-api", "gov-hub", "hub", "b-tool-c", "c", "tool-c", "a" * 63}
    datasets |= {"c", "b_c", "hourly", "x_hourly", "a" * 63}
    slugs |= {s for s in edge if naming.is_slug(s)}
    assert all(naming.is_slug(s) for s in slugs | tools)
    return sorted(slugs), sorted(tools), sorted(datasets)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_backend_name_has_exactly_one_owner(seed):
    slugs, tools, datasets = _universe(seed, 800)
    keycloak_clients, organizations, realms = {}, {}, {naming.SHARED_REALM: "shared realm"}
    topics, kafka_users, databases, namespaces = {}, {}, {}, {}
    access_entities = {naming.PUBLIC_WAREHOUSE_ROLE: "public reader"}   # users and roles share one
    quotas, secrets, workloads, configmaps, secret_keys, tables = {}, {}, {}, {}, {}, {}
    for app in naming.CLIENT_APPS:
        assert "--" not in app
        assert not any(other != app and other.endswith("-" + app) for other in naming.CLIENT_APPS)
    for slug in slugs:
        for app in naming.CLIENT_APPS:
            _assert_injective(keycloak_clients, naming.client(slug, app), ("client", slug, app))
        _assert_injective(organizations, naming.organization(slug), slug)
        _assert_injective(realms, naming.realm(slug), slug)
        _assert_injective(topics, naming.dlq_topic(slug), ("dlq", slug))
        _assert_injective(kafka_users, naming.kafka_user(slug), slug)
        _assert_injective(databases, naming.database(slug), slug)
        _assert_injective(namespaces, naming.namespace(slug), slug)
        _assert_injective(access_entities, naming.warehouse_user(slug), ("user", slug))
        _assert_injective(access_entities, naming.warehouse_role(slug), ("role", slug))
        _assert_injective(quotas, naming.warehouse_quota(slug), slug)
        # Namespaced objects: only one tenant's names meet in its namespace.
        _assert_injective(secrets, (slug, naming.credentials_secret(slug)), "credentials")
        _assert_injective(secrets, (slug, INGEST_SECRET), "ingest")
        for key in ("kafka-username", "kafka-password", "warehouse-username", "warehouse-password"):
            _assert_injective(secret_keys, key, key)
        for tool in tools:
            _assert_injective(keycloak_clients, naming.tool_client(slug, tool), ("tool client", slug, tool))
            assert naming.split_tool_client(naming.tool_client(slug, tool)) == (slug, tool)
        for tool in tools[:40]:   # topics: slug × tool × dataset, sampled to keep the test quick
            for dataset in datasets[:25]:
                _assert_injective(topics, naming.topic(slug, tool, dataset), ("topic", slug, tool, dataset))
        for other in slugs[:50]:
            if other != slug:
                assert not naming.topic(other, tools[0], datasets[0]).startswith(naming.topic_prefix(slug))
    for tool in tools:
        _assert_injective(workloads, naming.tool_workload(tool), tool)
        _assert_injective(configmaps, naming.tool_settings_configmap(tool), tool)
        from urbanstack.operator.plan import _client_secret_key
        _assert_injective(secret_keys, _client_secret_key(tool), ("tool", tool))
        for dataset in datasets:
            _assert_injective(tables, naming.table(tool, dataset), ("table", tool, dataset))
            _assert_injective(tables, naming.rollup_table(tool, dataset), ("rollup", tool, dataset))
            _assert_injective(tables, naming.rollup_view(tool, dataset), ("view", tool, dataset))
    for name in (*keycloak_clients, *realms, *topics, *namespaces, *workloads):
        assert len(name) <= naming.KEYCLOAK_NAME_MAX and (name not in namespaces or len(name) <= 63)


def test_the_collisions_of_the_earlier_names_are_gone():
    # tool "api" of "a" and the API client of "a-tool" were both "a-tool-api".
    assert naming.tool_client("a", "api") != naming.client("a-tool", "api")
    # tool "b-tool-c" of "a" and tool "c" of "a-tool-b" were both "a-tool-b-tool-c".
    assert naming.tool_client("a", "b-tool-c") != naming.tool_client("a-tool-b", "c")
    # slug "x"'s role and slug "x-role"'s user were both "muni_x_role"; GRANT would pick the user.
    assert naming.warehouse_role("x") != naming.warehouse_user("x-role")
    # a slug chosen as "<prefix>-<hash>" took the namespace a long slug was shortened to.
    long_slug = "a" * 60 + "-x"
    shortened = naming.namespace(long_slug)
    assert len(shortened) == 63 and "--" in shortened
    assert not naming.is_slug(shortened.removeprefix("muni-"))


def test_tool_client_ids_split_back_and_refuse_the_rest():
    assert naming.tool_client("guetersloh", "pegel-warnung") == "guetersloh--tool-pegel-warnung"
    assert naming.split_tool_client("guetersloh--tool-pegel-warnung") == ("guetersloh", "pegel-warnung")
    for other in ("guetersloh-tool-pegel-warnung", "guetersloh-api", "--tool-x", "a--tool-", "a--tool-B"):
        assert naming.split_tool_client(other) is None
    with pytest.raises(ValueError, match="--"):
        naming.client("a", "x--y")
