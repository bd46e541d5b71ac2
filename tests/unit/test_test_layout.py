"""The suite's own layout: pytest imports test modules by basename (rootdir-relative, no
packages), so two test files with the same name in different folders stop the whole run at
collection. This catches it in the unit run, before a merge reaches CI."""

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_every_test_module_has_a_unique_basename():
    names = Counter(path.name for path in TESTS.rglob("test_*.py"))
    assert [name for name, count in names.items() if count > 1] == []
