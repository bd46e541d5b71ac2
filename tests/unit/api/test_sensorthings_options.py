"""SensorThings query options: the $filter parser, $expand with nested options, and the
translation of Observation filters into SQL with bound parameters (no warehouse needed)."""

from datetime import datetime, timedelta, timezone

import pytest

from urbanstack.runtime.api.query import QueryError
from urbanstack.runtime.api.sensorthings.evaluate import Evaluator
from urbanstack.runtime.api.sensorthings.options import (Binary, Call, Geometry, Literal, Path, parse_expand,
                                                        parse_filter, parse_options, parse_orderby, query_pairs)
from urbanstack.runtime.api.sensorthings.sql import Translator

NOW = datetime(2026, 3, 4, 12, 0, tzinfo=timezone.utc)


def test_precedence_and_or_not_comparison_arithmetic():
    tree = parse_filter("not a eq 1 or b add 2 mul 3 gt 10 and c ne 'x'")
    assert tree == Binary("or", parse_filter("not (a eq 1)"),
                          Binary("and", Binary("gt", Binary("add", Path(("b",)), Binary("mul", Literal(2), Literal(3))),
                                               Literal(10)),
                                 Binary("ne", Path(("c",)), Literal("x"))))


def test_literals_paths_and_functions():
    tree = parse_filter("Datastreams/properties/layerName eq 'Anzahl_Fahrr''aeder' and "
                        "phenomenonTime ge 2026-03-02T00:00:00+01:00 and result le -2.5e1")
    left, last = tree.left, tree.right
    assert left.left == Binary("eq", Path(("Datastreams", "properties", "layerName")), Literal("Anzahl_Fahrr'aeder"))
    assert left.right.right == Literal(datetime(2026, 3, 1, 23, 0, tzinfo=timezone.utc))
    assert last.right == Literal(-25.0)
    assert parse_filter("Datastream/@iot.id eq 7") == Binary("eq", Path(("Datastream", "@iot.id")), Literal(7))
    assert parse_filter("resultTime gt now() sub duration'PT24H'") == Binary(
        "gt", Path(("resultTime",)), Binary("sub", Call("now", ()), Literal(timedelta(hours=24))))
    geo = parse_filter("st_within(Locations/location, geography'POLYGON ((1 1, 2 1, 2 2, 1 1))')")
    assert geo == Call("st_within", (Path(("Locations", "location")), Literal(Geometry("POLYGON ((1 1, 2 1, 2 2, 1 1))"))))


@pytest.mark.parametrize("text, message", [
    ("result gt", "expected a value"),
    ("result gt 1 2", "expected an operator"),
    ("nosuch(result) eq 1", "unknown function 'nosuch'"),
    ("startswith(name) eq 1", "startswith() takes 2 argument(s), got 1"),
    ("resultTime gt duration'P1M'", "not an ISO 8601 duration"),
    ("phenomenonTime gt 2026-03-02T00:00:00", "has no time zone; add Z"),
    ("name eq 'open", "unexpected character"),
    ("(" * 40 + "a eq 1" + ")" * 40, "nested deeper"),
])
def test_bad_filters_say_what_is_wrong(text, message):
    with pytest.raises(QueryError) as raised:
        parse_filter(text)
    assert raised.value.status == 400 and message in raised.value.message


def test_expand_nested_options_and_path_form():
    expand = parse_expand("Locations,Datastreams/Observations($orderby=phenomenonTime desc;$top=1),"
                          "Datastreams($filter=properties/field eq 'pedestrians';$expand=Sensor)")
    assert set(expand) == {"Locations", "Datastreams"}
    streams = expand["Datastreams"]
    assert streams.filter == parse_filter("properties/field eq 'pedestrians'")
    assert set(streams.expand) == {"Observations", "Sensor"}
    observations = streams.expand["Observations"]
    assert observations.top == 1 and observations.orderby[0].descending
    assert observations.raw == {"$orderby": "phenomenonTime desc", "$top": "1"}
    with pytest.raises(QueryError, match="at most 3"):
        parse_expand("Things/Datastreams/Observations/FeatureOfInterest")


def test_orderby_and_query_string_decoding():
    pairs = query_pairs("$filter=result%20gt%205&$orderby=phenomenonTime+desc,result&$top=2")
    assert pairs == {"$filter": "result gt 5", "$orderby": "phenomenonTime desc,result", "$top": "2"}
    order = parse_orderby(pairs["$orderby"])
    assert [(o.expression, o.descending) for o in order] == [(Path(("phenomenonTime",)), True),
                                                              (Path(("result",)), False)]
    with pytest.raises(QueryError, match=r"\$top: must be a whole number"):
        parse_options({"$top": "-1"})
    with pytest.raises(QueryError, match="not a SensorThings query option"):
        parse_options({"$filtr": "x"})


def test_observation_filter_becomes_sql_with_every_value_bound():
    params: dict = {}
    translator = Translator(params, NOW)
    condition = translator.condition(parse_filter(
        "(resultTime gt now() sub duration'PT24H') and (result ge 10 or startswith(result, 'x''; DROP')) "
        "and year(phenomenonTime) eq 2026"))
    assert "DROP" not in condition and "2026" not in condition and "'x" not in condition
    # resultTime: the reading's time for derived Observations, the stored resultTime for created ones
    assert "result_time >" in condition and "num >=" in condition and "startsWith(txt," in condition
    values = sorted(map(str, params.values()))
    # now() - 24 h is folded into one bound time; the other literals are bound as they are.
    assert str(NOW - timedelta(hours=24)) in values
    assert "x'; DROP" in params.values() and 10.0 in params.values() and 2026.0 in params.values()


def test_observation_geo_filter_binds_the_polygon():
    params: dict = {}
    condition = Translator(params, NOW).condition(parse_filter(
        "st_within(FeatureOfInterest/feature, geography'POLYGON ((8 51, 9 51, 9 52, 8 51))')"))
    assert "pointInPolygon((lon, lat), {f0:Array(Tuple(Float64, Float64))})" in condition
    assert params["f0"] == [(8.0, 51.0), (9.0, 51.0), (9.0, 52.0), (8.0, 51.0)]


def test_unsupported_observation_paths_are_refused_clearly():
    with pytest.raises(QueryError, match="conditions on Observations can use phenomenonTime"):
        Translator({}, NOW).condition(parse_filter("FeatureOfInterest/name eq 'x'"))
    with pytest.raises(QueryError, match="cannot compare a time with a number"):
        Translator({}, NOW).condition(parse_filter("phenomenonTime gt 5"))


def test_constant_expressions_evaluate():
    evaluator = Evaluator(None, NOW)
    assert evaluator.value(parse_filter("now() sub duration'P1DT12H'"), None) == NOW - timedelta(days=1, hours=12)
    assert evaluator.value(parse_filter("7 mod 3 add 10 div 4"), None) == 3
    assert evaluator.value(parse_filter("substringof('rad', tolower('Fahrrad'))"), None) is True
    assert evaluator.value(parse_filter(
        "st_intersects(geography'POINT (8.5 51.5)', geography'POLYGON ((8 51, 9 51, 9 52, 8 52, 8 51))')"),
        None) is True
