"""The Leitweg-ID (routing ID of German e-invoices, XRechnung): structure and check digits.

``<coarse>[-<fine>]-<check>``: the coarse address is 2–12 digits (it starts with the
code of the Bund or the Land), the optional fine address up to 30 letters and digits,
the check is two digits by ISO/IEC 7064 Mod 97-10 over coarse and fine address
together, letters counting A=10 … Z=35 as in an IBAN. ``04011000-1234512345-06`` is a
valid ID (the one the XRechnung examples use).
"""

from __future__ import annotations

import re

_SHAPE = re.compile(r"^(?P<coarse>[0-9]{2,12})(?:-(?P<fine>[A-Za-z0-9]{1,30}))?-(?P<check>[0-9]{2})$")


def _as_number(text: str) -> int:
    return int("".join(str(int(char, 36)) for char in text.upper()))


def check_digits(coarse: str, fine: str = "") -> str:
    """The two check digits of a Leitweg-ID with this coarse and fine address."""
    return f"{98 - _as_number(coarse + fine + '00') % 97:02d}"


def problem(value: str) -> str | None:
    """Why ``value`` is not a valid Leitweg-ID (an English message id for the page), or None."""
    text = (value or "").strip()
    match = _SHAPE.fullmatch(text)
    if match is None:
        return ("A Leitweg-ID looks like 04011000-1234512345-06: 2 to 12 digits, optionally a hyphen and up to "
                "30 letters or digits, then a hyphen and two check digits.")
    coarse, fine, check = match["coarse"], match["fine"] or "", match["check"]
    if _as_number(coarse + fine + check) % 97 != 1:
        return "The check digits of this Leitweg-ID do not match; please copy it again from your invoice settings."
    return None


def normalise(value: str) -> str:
    """The ID as stored: trimmed, letters upper-case (the check digits do not depend on case)."""
    return (value or "").strip().upper()
