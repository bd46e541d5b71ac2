"""`urbanstack tool new` writes a tool whose own tests pass and whose manifest the operator accepts."""

import subprocess
import sys

from urbanstack.cli import main


def test_scaffolded_tool_passes_its_generated_tests(tmp_path):
    target = tmp_path / "parkplatz-belegung"
    assert main(["tool", "new", "parkplatz-belegung", "--dir", str(target), "--owner", "bielefeld"]) == 0
    assert {p.name for p in target.rglob("*") if p.is_file()} >= {
        "citytool.yaml", "tool.py", "__init__.py", "test_tool.py", "Dockerfile", "pyproject.toml"}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
                            cwd=target, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout
    assert 'CMD ["python", "-m", "urbanstack.toolkit", "parkplatz_belegung.tool"]' in (target / "Dockerfile").read_text()


def test_scaffold_refuses_a_bad_name_and_an_existing_folder(tmp_path, capsys):
    assert main(["tool", "new", "Parkplatz Belegung", "--dir", str(tmp_path / "x")]) == 2
    assert "must be a slug" in capsys.readouterr().err
    (tmp_path / "taken").mkdir()
    assert main(["tool", "new", "parkplatz", "--dir", str(tmp_path / "taken")]) == 2
    assert "exists already" in capsys.readouterr().err
