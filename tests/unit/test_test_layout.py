"""The suite's own layout: pytest imports test modules by basename (rootdir-relative, no
packages), so two test files with the same name in different folders stop the whole run at
collection. This catches it in the unit run, before a merge reaches CI."""

import re
from collections import Counter
from pathlib import Path

import screenshots

TESTS = Path(__file__).resolve().parents[1]


def test_every_test_module_has_a_unique_basename():
    names = Counter(path.name for path in TESTS.rglob("test_*.py"))
    assert [name for name, count in names.items() if count > 1] == []


def test_screenshots_go_outside_the_source_tree_unless_asked_for():
    """An ordinary run leaves the tree clean; only `make screenshots` writes docs/screenshots/."""
    root = TESTS.parent
    for environ in ({}, {"URBANSTACK_STATE_DIR": "/var/tmp/us-state"}):
        assert root not in screenshots.folder(environ).parents
    assert screenshots.folder({"URBANSTACK_STATE_DIR": "/var/tmp/us-state"}) == Path("/var/tmp/us-state/screenshots")
    asked = root / "docs" / "screenshots"
    assert screenshots.folder({"URBANSTACK_SCREENSHOTS_DIR": str(asked)}) == asked
    # and no test names a folder of its own for its pictures
    own = [str(path.relative_to(root)) for path in TESTS.rglob("*.py")
           if path.name != "test_test_layout.py" and re.search(r'"docs"\s*/\s*"screenshots"|docs/screenshots/[\w{}-]*\.png"',
                                                           path.read_text())]
    assert own == []
