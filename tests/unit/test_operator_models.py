"""What a user sees when a manifest is wrong: one line per problem, saying what to fix."""

import copy

import pytest

from urbanstack.operator.ags import MunicipalityDirectory
from urbanstack.operator.models import (DeletionPolicy, IdentityStrategy, SpecError, parse_citytool,
                                        parse_municipality)
from pathlib import Path

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "municipalities.derived.csv"

MUNICIPALITY = {
    "apiVersion": "urbanstack.io/v1alpha1", "kind": "Municipality",
    "metadata": {"name": "guetersloh", "generation": 3},
    "spec": {"displayName": "Gütersloh", "ags": "05754008", "admins": ["Digital@Guetersloh.de"]},
}
TOOL = {
    "apiVersion": "urbanstack.io/v1alpha1", "kind": "CityTool", "metadata": {"name": "pegel-warnung"},
    "spec": {"displayName": "Pegel-Warnung", "version": "0.3.0", "owner": "bielefeld", "audience": "both",
             "datasets": [{"name": "water_levels",
                           "fields": [{"name": "water_level", "type": "Float64", "unit": "cm"}]}]},
}


def municipality(**spec):
    manifest = copy.deepcopy(MUNICIPALITY)
    manifest["spec"].update(spec)
    return manifest


def citytool(**spec):
    manifest = copy.deepcopy(TOOL)
    manifest["spec"].update(spec)
    return manifest


def problem(parse, manifest) -> str:
    with pytest.raises(SpecError) as error:
        parse(manifest)
    return str(error.value)


def test_defaults_are_the_safe_choices():
    spec = parse_municipality(municipality()).spec
    assert spec.deletion_policy is DeletionPolicy.retain
    assert spec.identity.strategy is IdentityStrategy.organization
    assert spec.suspended is False
    assert spec.admins == ["digital@guetersloh.de"]


def test_short_ags_names_the_field_and_the_value():
    assert problem(parse_municipality, municipality(ags="0575400")).startswith(
        "spec.ags: AGS must have 8 digits, got '0575400'")


def test_unquoted_ags_read_as_number_explains_the_quoting():
    assert "quoted string" in problem(parse_municipality, municipality(ags=1544704))


def test_ags_must_exist_in_the_directory_when_one_is_given():
    directory = MunicipalityDirectory.load(FIXTURE)
    assert parse_municipality(municipality(), directory).spec.ags == "05754008"
    assert "not in the municipality directory" in problem(
        lambda manifest: parse_municipality(manifest, directory), municipality(ags="05754009"))


def test_umlaut_name_gets_a_suggested_slug():
    manifest = municipality()
    manifest["metadata"]["name"] = "Rheda-Wiedenbrück"
    assert "such as 'rheda-wiedenbrueck'" in problem(parse_municipality, manifest)


def test_every_problem_is_listed_at_once():
    message = problem(parse_municipality, municipality(ags="123", admins=["not-an-email"], deletionPolicy="Keep"))
    assert "spec.ags:" in message and "spec.admins.0:" in message and "spec.deletionPolicy:" in message


def test_unknown_field_is_refused():
    assert "spec.retention" in problem(parse_municipality, municipality(retention=30))


def test_at_least_one_admin():
    assert "spec.admins" in problem(parse_municipality, municipality(admins=[]))


def test_tool_enabled_twice_is_refused():
    assert "more than once" in problem(parse_municipality, municipality(tools=[{"name": "a"}, {"name": "a"}]))


def test_public_share_requires_the_open_data_licence():
    share = {"tool": "pegel-warnung", "dataset": "water_levels", "public": True}
    assert "licence: dl-de/zero-2-0" in problem(parse_municipality, municipality(shares=[share]))


def test_share_with_nobody_is_refused():
    assert "names nobody" in problem(parse_municipality,
                                     municipality(shares=[{"tool": "pegel-warnung", "dataset": "water_levels"}]))


def test_plan_overrides_lay_over_the_preset():
    quotas = parse_municipality(municipality(plan={"name": "small", "cpu": 1, "memory": "2Gi"})).spec.plan.quotas()
    assert (quotas.cpu, quotas.memory, quotas.partitions) == ("1", "2Gi", 24)


def test_bad_quantity_shows_examples():
    assert "Kubernetes quantity" in problem(parse_municipality, municipality(plan={"memory": "lots"}))


def test_sort_key_must_name_a_column():
    dataset = {"name": "water_levels", "sortKey": ["gauge"], "fields": [{"name": "water_level", "type": "Float64"}]}
    assert "sortKey names 'gauge'" in problem(parse_citytool, citytool(datasets=[dataset]))


def test_sort_key_column_must_not_be_empty():
    dataset = {"name": "water_levels", "sortKey": ["station_name"],
               "fields": [{"name": "station_name", "type": "String"}]}
    assert "required: true" in problem(parse_citytool, citytool(datasets=[dataset]))


def test_dataset_fields_cannot_redefine_standard_columns():
    dataset = {"name": "water_levels", "fields": [{"name": "observed_at", "type": "DateTime"}]}
    assert "standard columns" in problem(parse_citytool, citytool(datasets=[dataset]))


def test_unknown_column_type_lists_the_choices():
    dataset = {"name": "water_levels", "fields": [{"name": "level", "type": "Double"}]}
    assert "Float64" in problem(parse_citytool, citytool(datasets=[dataset]))


def test_tool_roles_cannot_take_platform_role_names():
    assert "platform roles" in problem(parse_citytool, citytool(roles=["gov-admin"]))


def test_tool_env_cannot_override_platform_variables():
    assert "URBANSTACK_" in problem(parse_citytool, citytool(env=[{"name": "URBANSTACK_AGS", "value": "x"}]))


def test_audience_is_an_enum():
    assert "spec.audience" in problem(parse_citytool, citytool(audience="everyone"))


def test_retention_beyond_fifty_years_is_refused_before_it_can_wrap_the_ttl():
    import copy

    import yaml

    from urbanstack.operator.models import MAX_RETENTION_DAYS, SpecError, parse_municipality

    body = yaml.safe_load((Path(__file__).resolve().parents[2] / "examples" / "municipality-guetersloh.yaml")
                          .read_text())
    ok = copy.deepcopy(body)
    ok["spec"]["retentionDays"] = MAX_RETENTION_DAYS
    assert parse_municipality(ok).spec.retention_days == MAX_RETENTION_DAYS
    body["spec"]["retentionDays"] = 36_500
    with pytest.raises(SpecError, match="retentionDays"):
        parse_municipality(body)


def test_the_example_city_tools_describe_themselves_in_german_and_english():
    import yaml

    examples = Path(__file__).resolve().parents[2] / "examples"
    for path in sorted(examples.glob("citytool-*.yaml")):
        tool = parse_citytool(yaml.safe_load(path.read_text()))
        assert set(tool.spec.descriptions) == {"de", "en"}, path.name
    raw = yaml.safe_load((examples / "citytool-pegel-warnung.yaml").read_text())
    assert parse_citytool(raw).spec.description_de.startswith("Beobachtet Pegel")
    del raw["spec"]["descriptionDe"]
    assert parse_citytool(raw).spec.descriptions == {"en": raw["spec"]["description"]}
