import pytest

from urbanstack import warehouse


def test_redact_hides_the_password_only():
    assert warehouse.redact("http://ops:s3cret@ch.example:8123/db") == "http://ops:***@ch.example:8123/db"
    assert warehouse.redact("chdb:///var/lib/us") == "chdb:///var/lib/us"


def test_unknown_scheme_is_refused_without_leaking_secrets():
    with pytest.raises(ValueError) as error:
        warehouse.connect("postgres://ops:s3cret@db/x")
    assert "s3cret" not in str(error.value)
    assert "chdb://" in str(error.value)
