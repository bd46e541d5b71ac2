"""Urban Stack: a shared, multi-tenant urban data platform.

In a source checkout the repository's top-level rooms (``operator/``,
``runtime/``, ``stacks/``, ``templates/``) are subpackages of this package:
``operator/plan.py`` is imported as ``urbanstack.operator.plan``. Those folders
have no ``__init__.py`` on purpose, so that running Python from the checkout can
never shadow the standard library's ``operator`` module. An installed wheel
carries them inside ``urbanstack/`` as usual.
"""

from pathlib import Path as _Path

__version__ = "0.1.0"

_checkout = _Path(__file__).resolve().parent.parent
if (_checkout / "pyproject.toml").is_file() and (_checkout / "operator").is_dir():
    __path__.append(str(_checkout))  # type: ignore[name-defined]
