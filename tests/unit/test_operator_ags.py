"""AGS checks: the format always, the municipality directory where configured."""

from pathlib import Path

import pytest

from urbanstack.operator import ags
from urbanstack.settings import Settings

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "municipalities.derived.csv"
REAL_DIRECTORY = (Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "municipalities" / "derived"
                  / "gv_gemeinden_31122024.derived.csv")


@pytest.mark.parametrize("value, message", [
    ("0575400", "AGS must have 8 digits, got '0575400'"),
    ("057540080", "AGS must have 8 digits, got '057540080'"),
    ("0575400x", "AGS must consist of 8 digits, got '0575400x'"),
    ("17000000", "Land code 01–16, got '17'"),
    ("00123456", "Land code 01–16, got '00'"),
])
def test_malformed_ags_says_what_is_wrong(value, message):
    with pytest.raises(ags.AgsError, match=message.replace("(", r"\(")):
        ags.check_format(value)


def test_seven_digits_hint_at_a_lost_leading_zero():
    assert "leading zero" in ags.format_error("5754008")


def test_well_formed_ags_passes():
    assert ags.check_format("05754008") == "05754008"


def test_directory_offers_official_name_and_residents():
    entry = ags.MunicipalityDirectory.load(FIXTURE).lookup("05754028")
    assert entry.display_name == "Rheda-Wiedenbrück"
    assert entry.population == 49800
    assert entry.land == "Nordrhein-Westfalen"


def test_unknown_ags_is_refused_even_if_well_formed():
    with pytest.raises(ags.AgsError, match="'05754009' is not in the municipality directory"):
        ags.MunicipalityDirectory.load(FIXTURE).lookup("05754009")


def test_area_without_municipality_cannot_be_a_tenant():
    with pytest.raises(ags.AgsError, match="not a Gemeinde"):
        ags.MunicipalityDirectory.load(FIXTURE).lookup("09999901")


def test_directory_comes_from_the_setting(tmp_path):
    settings = Settings.from_env({"HOME": str(tmp_path), "URBANSTACK_MUNICIPALITY_DIRECTORY": str(FIXTURE)})
    assert len(ags.load_directory(settings)) == 4
    assert ags.load_directory(Settings.from_env({"HOME": str(tmp_path)})) is None


def test_unreadable_directory_names_the_variable(tmp_path):
    with pytest.raises(FileNotFoundError, match="URBANSTACK_MUNICIPALITY_DIRECTORY"):
        ags.MunicipalityDirectory.load(tmp_path / "missing.csv")


def test_directory_with_other_columns_is_refused(tmp_path):
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("ags,name\n05754008,Gütersloh\n", encoding="utf-8")
    with pytest.raises(ValueError, match="lacks the columns"):
        ags.MunicipalityDirectory.load(wrong)


@pytest.mark.skipif(not REAL_DIRECTORY.is_file(), reason=f"Destatis directory not present at {REAL_DIRECTORY}")
def test_real_directory_knows_every_example_municipality():
    directory = ags.MunicipalityDirectory.load(REAL_DIRECTORY)
    assert sum(1 for code in ("05711000", "05754008", "05754028") if directory.lookup(code)) == 3
    assert directory.lookup("05754008").display_name == "Gütersloh"
    assert directory.lookup("05711000").population > 300_000
