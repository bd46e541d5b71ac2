"""Moved to :mod:`urbanstack.operator.leitweg` (the Municipality's billing data checks it too)."""

from urbanstack.operator.leitweg import _as_number, check_digits, normalise, problem  # noqa: F401
