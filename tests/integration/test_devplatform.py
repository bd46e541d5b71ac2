"""``urbanstack dev up`` is idempotent and ``dev down`` leaves no process behind.

The lifecycle runs in its own state folder on its own ports with the two
quickest services (etcd and Kafka), so the platform the other tests use keeps
running."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest

from urbanstack.devplatform import platform as dev_platform
from urbanstack.devplatform import processes
from urbanstack.devplatform.service import port_open

pytestmark = pytest.mark.platform


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "urbanstack.cli", "dev", *args],
                          env=env, capture_output=True, text=True, timeout=600)


def test_up_twice_is_a_noop_and_down_leaves_nothing(tmp_path, settings):
    state = tmp_path / "state"
    env = dict(os.environ, URBANSTACK_STATE_DIR=str(state), URBANSTACK_CACHE_DIR=str(settings.cache_dir),
               URBANSTACK_ETCD_PORT="24790", URBANSTACK_KAFKA_PORT="29192",
               URBANSTACK_KAFKA_CONTROLLER_PORT="29193")
    isolated = dataclasses.replace(settings, state_dir=state, etcd_port=24790, kafka_port=29192,
                                   kafka_controller_port=29193)
    first = _cli(env, "up", "etcd", "kafka")
    assert first.returncode == 0, first.stderr
    pids = {name: processes.find(name, isolated.run_dir).pid for name in ("etcd", "kafka")}
    assert port_open(24790) and port_open(29192)

    second = _cli(env, "up", "etcd", "kafka")
    assert second.returncode == 0, second.stderr
    assert "starting" not in second.stderr  # nothing was started again
    assert {name: processes.find(name, isolated.run_dir).pid for name in pids} == pids

    down = _cli(env, "down")
    assert down.returncode == 0, down.stderr
    for name, pid in pids.items():
        assert not os.path.exists(f"/proc/{pid}") or _is_zombie(pid), f"{name} (pid {pid}) still runs"
    assert not port_open(24790) and not port_open(29192)
    status = _cli(env, "status")
    assert status.returncode == 3 and "running" not in status.stdout


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_up_on_the_running_platform_starts_nothing(platform):
    before = {st.name: st.pid for st in dev_platform.status(platform)}
    assert all(before.values()), before
    after = {st.name: st.pid for st in dev_platform.up(platform)}
    assert after == before


def test_down_does_not_touch_processes_it_did_not_start(tmp_path):
    """A stale pid record pointing at someone else's process is ignored."""
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        run_dir = tmp_path / "run"
        run_dir.mkdir()
        (run_dir / "kafka.json").write_text(
            '{"name": "kafka", "pid": %d, "start_ticks": 1, "command": ["java"], "log": "x"}' % stranger.pid)
        assert processes.find("kafka", run_dir) is None
        assert processes.stop("kafka", run_dir) is False
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_kafka_keeps_its_admin_across_a_restart_after_a_user_was_deleted(tmp_path, settings):
    """Kafka 4.1 rebuilds its metadata on start from the newest snapshot plus the log after it.
    Without a snapshot, one deleted SCRAM user whose name hashes before "admin" (``probe-a``
    does) made the rebuilt image drop every SCRAM user, the admin too: after `dev down` and
    `dev up` (or a reboot) every login failed until the data was purged. `dev up` now waits for
    the first snapshot, which holds the admin, so the restart below finds it."""
    from confluent_kafka.admin import AdminClient, UserScramCredentialDeletion, UserScramCredentialUpsertion
    from confluent_kafka.admin import ScramCredentialInfo, ScramMechanism

    from urbanstack.devplatform import kafka

    state = tmp_path / "state"
    env = dict(os.environ, URBANSTACK_STATE_DIR=str(state), URBANSTACK_CACHE_DIR=str(settings.cache_dir),
               URBANSTACK_KAFKA_PORT="29292", URBANSTACK_KAFKA_CONTROLLER_PORT="29293")
    isolated = dataclasses.replace(settings, state_dir=state, kafka_port=29292, kafka_controller_port=29293,
                                   kafka_bootstrap_servers="")
    try:
        first = _cli(env, "up", "kafka")
        assert first.returncode == 0, first.stderr
        admin = AdminClient(kafka.admin_config(isolated))
        info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096)
        for change in (UserScramCredentialUpsertion("probe-a", info, b"probe-a-password"),
                       UserScramCredentialDeletion("probe-a", ScramMechanism.SCRAM_SHA_512)):
            for future in admin.alter_user_scram_credentials([change]).values():
                future.result(timeout=30)
        assert _cli(env, "down").returncode == 0

        again = _cli(env, "up", "kafka")
        assert again.returncode == 0, again.stderr[-2000:]
        metadata = AdminClient(kafka.admin_config(isolated) | {"socket.timeout.ms": 5000}).list_topics(timeout=10)
        assert metadata.brokers, "the admin cannot log in after the restart"
    finally:
        _cli(env, "down")
