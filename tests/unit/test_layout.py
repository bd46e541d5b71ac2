"""The import layout can never shadow Python's own ``operator`` module."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_stdlib_operator_wins_when_running_from_the_checkout():
    out = subprocess.run([sys.executable, "-c", "import operator; print(operator.__file__)"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert not out.strip().startswith(str(ROOT)), out


def test_rooms_are_subpackages_of_urbanstack():
    import importlib.resources

    assert not (ROOT / "operator" / "__init__.py").exists()
    assert importlib.resources.files("urbanstack.templates").is_dir()
