from pathlib import Path

import pytest

from urbanstack.settings import FIELDS, Settings, describe


def test_defaults_are_documented_and_loopback_friendly():
    s = Settings.from_env({"HOME": "/home/ops"})
    assert s.state_dir == Path("/home/ops/.local/state/urbanstack")
    assert s.cache_dir == Path("/home/ops/.cache/urbanstack")
    assert s.warehouse_url == "chdb:///home/ops/.local/state/urbanstack/warehouse"
    assert s.apiserver_url.startswith("https://127.0.0.1:")
    assert s.kafka_bootstrap.startswith("127.0.0.1:")
    assert {row[0] for row in describe(s)} == {f.env for f in FIELDS.values()}
    assert all(f.doc for f in FIELDS.values())


def test_environment_overrides_defaults():
    s = Settings.from_env({"HOME": "/h", "URBANSTACK_STATE_DIR": "/srv/us", "URBANSTACK_KAFKA_PORT": "29092",
                           "URBANSTACK_WAREHOUSE_URL": "http://ch:8123"})
    assert s.state_dir == Path("/srv/us")
    assert s.kafka_bootstrap == "127.0.0.1:29092"
    assert s.warehouse_url == "http://ch:8123"
    assert s.kubeconfig == Path("/srv/us/kube/admin.kubeconfig")


def test_bad_number_names_the_variable():
    with pytest.raises(ValueError, match="URBANSTACK_KAFKA_PORT must be a number, got 'abc'"):
        Settings.from_env({"HOME": "/h", "URBANSTACK_KAFKA_PORT": "abc"})
