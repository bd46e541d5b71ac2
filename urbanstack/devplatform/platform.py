"""``urbanstack dev up | down | status``: the whole local platform on loopback.

``up`` is idempotent: a service that already runs (a process we started, still
alive and ready) is left alone, so a second ``up`` is a no-op. Services start in
dependency order; independent ones start together and are waited for together.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass

from urbanstack.devplatform import processes
from urbanstack.devplatform.kafka import Kafka
from urbanstack.devplatform.keycloak import Keycloak
from urbanstack.devplatform.kube import ApiServer, ControllerManager, Etcd
from urbanstack.devplatform.mosquitto import Mosquitto
from urbanstack.devplatform.postgres import Postgres
from urbanstack.devplatform.progress import Step
from urbanstack.devplatform.service import Service
from urbanstack.devplatform.smtp import Smtp
from urbanstack.settings import Settings

SERVICE_CLASSES = (Etcd, ApiServer, ControllerManager, Kafka, Keycloak, Postgres, Smtp, Mosquitto)
SERVICE_NAMES = tuple(cls.name for cls in SERVICE_CLASSES)


class ServiceNotReady(RuntimeError):
    pass


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    state: str  # running | starting | stopped | foreign | failed
    pid: int | None
    endpoint: str
    log: str
    problem: str = ""   # what is wrong with a failed service and what to do


def services(settings: Settings) -> dict[str, Service]:
    return {cls.name: cls(settings) for cls in SERVICE_CLASSES}


def _with_dependencies(all_services: dict[str, Service], names) -> list[str]:
    ordered: list[str] = []

    def visit(name: str) -> None:
        if name not in all_services:
            raise ValueError(f"unknown service {name!r}; choose from {', '.join(SERVICE_NAMES)}")
        for dep in all_services[name].depends_on:
            visit(dep)
        if name not in ordered:
            ordered.append(name)

    for name in names:
        visit(name)
    return ordered


def up(settings: Settings, names=None) -> list[ServiceStatus]:
    """Install, start and wait for the named services (default: all).

    A service starts as soon as the services it depends on are ready, so the
    Kubernetes chain does not wait for Keycloak's slower start."""
    all_services = services(settings)
    wanted = _with_dependencies(all_services, names or SERVICE_NAMES)
    for path in (settings.state_dir, settings.logs_dir, settings.run_dir):
        path.mkdir(parents=True, exist_ok=True)
    settings.state_dir.chmod(0o700)
    for name in wanted:  # downloads and builds first, each with its own progress line
        all_services[name].install()
    for name in wanted:
        if processes.find(name, settings.run_dir) and all_services[name].needs_restart():
            processes.stop(name, settings.run_dir)
    ready = {name for name in wanted
             if processes.find(name, settings.run_dir) and all_services[name].ready()}
    pending = [name for name in wanted if name not in ready]
    if pending:
        _start(all_services, wanted, pending, ready, settings)
    if "keycloak" in wanted:
        from urbanstack.devplatform import credentials, keycloak

        with Step("Keycloak: the Gov Hub's own service-account client"):
            keycloak.ensure_gov_hub_client(credentials.fill(settings))
        with Step("Keycloak: the platform realm with the ops console's client"):
            keycloak.ensure_platform_realm(credentials.fill(settings))
    if "kube-apiserver" in wanted:
        from urbanstack.devplatform import bootstrap

        with Step("installing CRDs and the operator's ClusterRole"):
            bootstrap.apply(settings)
    return status(settings, wanted)


def _start(all_services: dict[str, Service], wanted: list[str], pending: list[str], ready: set[str],
           settings: Settings) -> None:
    waiting: dict[str, float] = {}
    with Step(f"starting {', '.join(pending)}") as step:
        while pending or waiting:
            for name in list(pending):
                service = all_services[name]
                if not all(dep in ready for dep in service.depends_on if dep in wanted):
                    continue
                if processes.find(name, settings.run_dir) is None:
                    service.prepare()
                    command, env = service.command()
                    processes.start(name, command, run_dir=settings.run_dir, log_path=service.log_path, env=env)
                pending.remove(name)
                waiting[name] = time.monotonic() + settings.ready_timeout
            for name, deadline in list(waiting.items()):
                service = all_services[name]
                if service.ready():
                    ready.add(name)
                    del waiting[name]
                elif processes.find(name, settings.run_dir) is None:
                    raise ServiceNotReady(
                        f"{name} exited during start-up; see its log {service.log_path}:\n"
                        + processes.log_tail(service.log_path))
                elif time.monotonic() > deadline:
                    raise ServiceNotReady(
                        f"{name} was not ready after {settings.ready_timeout:.0f} s (URBANSTACK_READY_TIMEOUT); "
                        f"see its log {service.log_path}:\n" + processes.log_tail(service.log_path))
            if waiting or pending:
                step.label = f"starting {', '.join([*waiting, *pending])}"
                time.sleep(0.3)
        step.label = f"started {', '.join(name for name in wanted if name in ready)}"


def down(settings: Settings, *, purge: bool = False) -> list[str]:
    """Stop what ``up`` started, in reverse order; ``purge`` also deletes all data."""
    stopped = []
    for name in reversed(SERVICE_NAMES):
        if processes.stop(name, settings.run_dir):
            stopped.append(name)
    if purge:
        for service in services(settings).values():
            service.purge()
    if purge and settings.state_dir.exists():
        shutil.rmtree(settings.state_dir)
    return stopped


def status(settings: Settings, names=None) -> list[ServiceStatus]:
    result = []
    for name, service in services(settings).items():
        if names and name not in names:
            continue
        managed = processes.find(name, settings.run_dir)
        problem = ""
        if managed is None:
            state = "stopped"
        else:
            try:
                state = "running" if service.ready() else "starting"
            except RuntimeError as error:   # a service that runs but cannot work (its ready() says why)
                state, problem = "failed", str(error)
        result.append(ServiceStatus(name, state, managed.pid if managed else None,
                                    service.endpoint(), str(service.log_path), problem))
    return result
