"""`urbanstack dev status` names a service that runs but cannot work, with what to do."""

from __future__ import annotations

from types import SimpleNamespace

from urbanstack import cli
from urbanstack.devplatform import platform
from urbanstack.settings import Settings


class _Refusing:
    """Stands for a Kafka whose broker rejects the admin (reproduced for real in
    tests/integration/test_devplatform.py; here only the reporting is under test)."""

    log_path = "/tmp/kafka.log"

    def ready(self) -> bool:
        raise RuntimeError("Kafka is running but rejects the platform admin's SCRAM credential; run dev down")

    def endpoint(self) -> str:
        return "127.0.0.1:19092"


class _Fine(_Refusing):
    def ready(self) -> bool:
        return True


def test_a_service_that_runs_but_refuses_work_is_failed_with_its_reason(monkeypatch, tmp_path, capsys):
    settings = Settings.from_env({"URBANSTACK_STATE_DIR": str(tmp_path)})
    monkeypatch.setattr(platform, "services", lambda s: {"etcd": _Fine(), "kafka": _Refusing()})
    monkeypatch.setattr(platform.processes, "find", lambda name, run_dir: SimpleNamespace(pid=4242))

    statuses = platform.status(settings)
    assert [(s.name, s.state) for s in statuses] == [("etcd", "running"), ("kafka", "failed")]
    assert statuses[0].problem == ""
    cli._print_status(statuses, settings)
    out = capsys.readouterr().out
    assert "kafka: Kafka is running but rejects the platform admin's SCRAM credential; run dev down" in out
    assert "failed" in out.splitlines()[2]
