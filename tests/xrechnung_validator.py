"""The Mustang project's e-invoice validator (Apache-2.0, from Maven Central with the
machine's Maven, cached under the platform's cache folder), run on a file by a
five-line Java launcher: EN 16931 and XRechnung 3.0 rules, UBL and CII."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from urbanstack import versions
from urbanstack.devplatform import maven

_LAUNCHER = """import org.mustangproject.validator.ZUGFeRDValidator;
public class Validate {
    public static void main(String[] args) {
        ZUGFeRDValidator validator = new ZUGFeRDValidator();
        System.out.println(validator.validate(args[0]));
        System.exit(validator.wasCompletelyValid() ? 0 : 1);
    }
}
"""


def missing_tools() -> str | None:
    for tool in ("java", "mvn"):
        if shutil.which(tool) is None:
            return f"the XRechnung validator needs '{tool}' (a JDK 17+ and Maven) on the PATH"
    return None


def install(cache_dir: Path) -> Path:
    home = cache_dir / f"mustang-validator-{versions.MUSTANG_VALIDATOR}"
    lib = home / "lib"
    if not lib.is_dir():
        maven.copy_dependencies(home / "work", [f"org.mustangproject:validator:{versions.MUSTANG_VALIDATOR}"], lib)
    launcher = home / "Validate.java"
    if not launcher.exists() or launcher.read_text() != _LAUNCHER:
        launcher.write_text(_LAUNCHER)
    return home


def validate(home: Path, invoice: Path) -> tuple[bool, str]:
    """(valid, the validator's XML report)."""
    done = subprocess.run(["java", "-cp", str(home / "lib" / "*"), str(home / "Validate.java"), str(invoice)],
                          capture_output=True, text=True, timeout=300)
    return done.returncode == 0, done.stdout
