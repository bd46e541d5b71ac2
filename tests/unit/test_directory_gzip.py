"""The municipality directory read from its gzipped form (as the stack mounts it from a
ConfigMap, which holds at most 1 MiB): the same entries as the plain CSV."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from urbanstack.operator.ags import MunicipalityDirectory

DERIVED = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "municipalities" / "derived"
CSV = DERIVED / "gv_gemeinden_31122024.derived.csv"


@pytest.mark.skipif(not CSV.exists(), reason="the Destatis fixture is in ../shared (not committed: its publisher's)")
def test_the_gzipped_directory_reads_like_the_csv(tmp_path):
    packed = tmp_path / "gemeinden.csv.gz"
    packed.write_bytes(gzip.compress(CSV.read_bytes()))
    assert packed.stat().st_size < 1024 * 1024  # fits into a ConfigMap
    plain, zipped = MunicipalityDirectory.load(CSV), MunicipalityDirectory.load(packed)
    assert zipped.lookup("05754044") == plain.lookup("05754044") and zipped.lookup("05754044").name.startswith("Verl")
