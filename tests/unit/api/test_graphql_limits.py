"""What a GraphQL document costs before it runs (data fields through aliases, fragments and variables),
and how refusals are logged."""

import logging

from graphql import parse

from urbanstack.runtime.api.graphql import RateLimitedLog, data_fields
from urbanstack.runtime.api.query import ApiLimits

LIMITS = ApiLimits()
SERIES = 'series(dataset: {owner: "a", tool: "b", name: "c"}, fields: ["x"]'


def _measure(document: str, variables=None, operation=None) -> tuple[int, int]:
    return data_fields(parse(document), operation, variables, LIMITS)


def test_each_alias_is_a_data_field_and_introspection_is_free():
    assert _measure("{ __typename datasets { id } a: datasets { id } }") == (2, 2)
    assert _measure("{ __typename __schema { types { name } } }") == (0, 0)


def test_rows_and_values_per_row_set_the_cost():
    assert _measure(f"{{ {SERIES}) {{ nextCursor }} }}") == (1, 1)  # 1,000 rows × 1 value
    assert _measure(f"{{ {SERIES}, limit: 10000, aggregates: [avg, p95]) {{ nextCursor }} }}") == (1, 2)
    assert _measure('{ observations(dataset: {owner: "a", tool: "b", name: "c"}) { nextCursor } }') == (1, 4)
    join = ('{ join(left: {dataset: {owner: "a", tool: "b", name: "c"}, fields: ["x", "y"], aggregates: [sum, avg]}, '
            'right: {dataset: {owner: "a", tool: "b", name: "d"}, fields: ["z"]}, limit: 10000) { nextCursor } }')
    assert _measure(join) == (1, 5)


def test_variables_count_like_literals():
    document = ('query ($n: Int, $f: [String!]!) { series(dataset: {owner: "a", tool: "b", name: "c"}, fields: $f, '
                'limit: $n) { nextCursor } }')
    assert _measure(document, {"n": 10_000, "f": ["x", "y", "z"]}) == (1, 3)
    assert _measure(document, {"n": 10 ** 9, "f": ["x"]}) == (1, 1)  # the engine refuses it; counted at most


def test_fragments_count_every_spread_without_expanding_them():
    nested = "".join(f"fragment F{i} on Query {{ ...F{i + 1} ...F{i + 1} }}\n" for i in range(60))
    document = f"query {{ ...F0 }}\n{nested}fragment F60 on Query {{ datasets {{ id }} }}"
    assert _measure(document) == (2 ** 60, 2 ** 60)
    assert _measure("{ ... on Query { a: datasets { id } b: datasets { id } } }") == (2, 2)


def test_only_the_named_operation_counts():
    document = "query A { datasets { id } } query B { a: datasets { id } b: datasets { id } }"
    assert _measure(document, operation="B") == (2, 2)


def test_refusal_lines_are_rate_limited_and_say_how_many_were_left_out(caplog):
    now = [0.0]
    limited = RateLimitedLog(logging.getLogger("test.refusals"), burst=3, period=60.0, clock=lambda: now[0])
    caplog.set_level(logging.INFO, logger="test.refusals")
    for number in range(10):
        limited.info("refused %d", number)
    assert [r.getMessage() for r in caplog.records] == ["refused 0", "refused 1", "refused 2"]
    now[0] = 60.0
    limited.info("refused %d", 10)
    assert caplog.records[-1].getMessage() == "refused 10 (7 similar lines left out before)"
