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
