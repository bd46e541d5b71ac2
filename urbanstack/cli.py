"""The ``urbanstack`` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from urbanstack import settings as settings_module
from urbanstack.settings import MissingSetting, Settings


def _print_table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(widths[i]) for i, cell in enumerate(row)).rstrip())


def _dev_up(args, s: Settings) -> int:
    from urbanstack.devplatform import platform

    try:
        statuses = platform.up(s, args.services or None)
    except (platform.ServiceNotReady, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    _print_status(statuses, s)
    return 0


def _print_status(statuses, s: Settings) -> None:
    from urbanstack import warehouse

    rows = [(st.name, st.state, str(st.pid or "-"), st.endpoint) for st in statuses]
    rows.append(("warehouse", "embedded" if warehouse.is_embedded(s.warehouse_url) else "server", "-",
                 warehouse.redact(s.warehouse_url)))
    _print_table(rows, ("SERVICE", "STATE", "PID", "ENDPOINT"))
    for st in statuses:
        if st.problem:
            print(f"\n{st.name}: {st.problem}")
    print(f"\nstate: {s.state_dir}   logs: {s.logs_dir}   credentials: {s.secrets_dir} (0600)")
    print(f"export KUBECONFIG={s.kubeconfig}")


def _dev_down(args, s: Settings) -> int:
    from urbanstack.devplatform import platform

    stopped = platform.down(s, purge=args.purge)
    print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    if args.purge:
        print(f"purged {s.state_dir}")
    return 0


def _dev_status(args, s: Settings) -> int:
    from urbanstack.devplatform import platform

    statuses = platform.status(s)
    if args.json:
        print(json.dumps([st.__dict__ for st in statuses], indent=2))
    else:
        _print_status(statuses, s)
    return 0 if all(st.state == "running" for st in statuses) else 3


def _local(s: Settings) -> Settings:
    """On the local platform (no cluster, embedded warehouse) the services log in with the
    credentials `urbanstack dev up` generated, for identities the environment leaves empty.
    Anywhere else nothing is filled in: a service without its identity refuses to start."""
    from urbanstack.devplatform import credentials

    return credentials.fill(s) if credentials.is_local(s) else s


def _settings(args, s: Settings) -> int:
    _print_table(settings_module.describe(s), ("VARIABLE", "VALUE", "MEANING"))
    return 0


def _mqtt_seed(args, s: Settings) -> int:
    """The in-cluster broker's init container: its first access-control file, never replaced."""
    from urbanstack.runtime.mqtt.security import seed

    path = Path(args.path)
    user, password = s.mqtt_admin()
    if seed(path, user, password):
        print(f"wrote the broker's access control with admin {user} to {path}")
    else:
        print(f"{path} exists: kept (it holds every municipality's broker client)")
    return 0


def _operator_run(args, s: Settings) -> int:
    import asyncio
    import logging
    import os

    import kopf

    from urbanstack.operator import backends as operator_backends

    s = _local(s)
    kubeconfig = operator_backends.operator_kubeconfig(s)
    if kubeconfig:
        os.environ["KUBECONFIG"] = kubeconfig  # Kopf logs in with the operator's own identity
    from urbanstack.operator import handlers

    handlers.configure(s)  # without its Kafka and Keycloak identities this raises MissingSetting
    kopf.configure(verbose=args.verbose)  # sets up logging; a second handler would print every line twice
    if not args.verbose:
        logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per Keycloak call is noise
    asyncio.run(kopf.operator(clusterwide=True, standalone=args.standalone,
                              liveness_endpoint=args.liveness or None))
    return 0


def _serve(args, s: Settings) -> int:
    import logging

    from urbanstack import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return serve.run(_local(s), host=args.host or s.http_host, port=args.port or s.http_port,
                     with_operator=args.operator)


def _api(args, s: Settings) -> int:
    import logging

    from urbanstack import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return serve.run_api(s, host=args.host or s.http_host, port=args.port or s.http_port)


def _hub(args, s: Settings) -> int:
    import logging

    from urbanstack import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return serve.run_hub(s, host=args.host or s.http_host, port=args.port or s.hub_port)


def _sink(args, s: Settings) -> int:
    import logging

    from urbanstack.runtime.sink import run_sink

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_sink(_local(s))
    return 0


def _ingest(args, s: Settings) -> int:
    import logging

    from urbanstack.runtime.ingest import service

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return service.run(s, host=args.host or s.http_host, port=args.port or s.ingest_port, pull=args.pull)


def _demo(args, s: Settings) -> int:
    from urbanstack import demo

    return demo.run(_local(s))


def _tool_new(args, s: Settings) -> int:
    from pathlib import Path

    from urbanstack.toolkit import scaffold
    from urbanstack.toolkit.context import ContextError

    try:
        written = scaffold.new(args.name, Path(args.dir or args.name), owner=args.owner)
    except ContextError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path}")
    print(f"next: cd {args.dir or args.name} && python -m pytest tests")
    return 0


def _tool_kube(args, s: Settings):
    from urbanstack import kubeclient

    return kubeclient.api_client(args.kubeconfig or os.environ.get("KUBECONFIG") or str(s.kubeconfig))


def _tool_run(args, s: Settings) -> int:
    from urbanstack.toolkit import local
    from urbanstack.toolkit.context import ContextError

    try:
        process = local.start(_tool_kube(args, s), args.municipality, args.name, bootstrap=s.kafka_bootstrap,
                              module=args.module)
    except ContextError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        return process.wait()
    except KeyboardInterrupt:
        process.terminate()
        return process.wait(timeout=30)


def _tool_webhook_secret(args, s: Settings) -> int:
    import tempfile
    from pathlib import Path

    from urbanstack.toolkit import local, notify
    from urbanstack.toolkit.context import ContextError

    with tempfile.TemporaryDirectory() as folder:
        try:
            env = local.deployment_environment(_tool_kube(args, s), args.municipality, args.name, Path(folder))
        except ContextError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    print(notify.subscription_secret(env["URBANSTACK_CLIENT_SECRET"], args.url))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="urbanstack", description="Urban Stack command line")
    sub = parser.add_subparsers(dest="command", required=True)

    dev = sub.add_parser("dev", help="the local platform (Kubernetes API, Kafka, Keycloak, warehouse)")
    dev_sub = dev.add_subparsers(dest="dev_command", required=True)
    up = dev_sub.add_parser("up", help="install, start and wait for the local platform (idempotent)")
    up.add_argument("services", nargs="*", help="only these services (and what they depend on)")
    up.set_defaults(func=_dev_up)
    down = dev_sub.add_parser("down", help="stop what 'dev up' started")
    down.add_argument("--purge", action="store_true", help="also delete all data, logs and credentials")
    down.set_defaults(func=_dev_down)
    st = dev_sub.add_parser("status", help="what runs where (exit 3 if anything is not running)")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=_dev_status)

    op = sub.add_parser("operator", help="the Kopf operator that provisions municipalities")
    op_sub = op.add_subparsers(dest="operator_command", required=True)
    run = op_sub.add_parser("run", help="run the operator against the configured cluster")
    run.add_argument("--standalone", action="store_true",
                     help="no peering with other replicas (local development, a single replica)")
    run.add_argument("--liveness", default="http://127.0.0.1:8080/healthz",
                     help="liveness endpoint URL ('' to disable)")
    run.add_argument("--verbose", action="store_true")
    run.set_defaults(func=_operator_run)

    for name, func, text in (
            ("serve", _serve, "data plane in one process: sink + API (+ the operator with the embedded warehouse)"),
            ("api", _api, "the REST + GraphQL API only (needs a ClickHouse server URL)")):
        command = sub.add_parser(name, help=text)
        command.add_argument("--host", help="default: URBANSTACK_HTTP_HOST")
        command.add_argument("--port", type=int, help="default: URBANSTACK_HTTP_PORT")
        if name == "serve":
            command.add_argument("--operator", action=argparse.BooleanOptionalAction, default=None,
                                 help="also run the operator (default: only with the embedded warehouse)")
        command.set_defaults(func=func)
    sink = sub.add_parser("sink", help="the Kafka → ClickHouse sink only (needs a ClickHouse server URL)")
    sink.set_defaults(func=_sink)

    ingest = sub.add_parser("ingest", help="push endpoints (/ingest/v1/...) and the pull-source scheduler")
    ingest.add_argument("--host", help="default: URBANSTACK_HTTP_HOST")
    ingest.add_argument("--port", type=int, help="default: URBANSTACK_INGEST_PORT")
    ingest.add_argument("--pull", action=argparse.BooleanOptionalAction, default=None,
                        help="also run the pull scheduler (default: on, unless URBANSTACK_INGEST_PULL=0)")
    ingest.set_defaults(func=_ingest)

    hub = sub.add_parser("hub", help="the web pages (Gov Hub) only, with the upload page unless URBANSTACK_INGEST=0 "
                                     "(needs a ClickHouse server URL and the metadata store)")
    hub.add_argument("--host", help="default: URBANSTACK_HTTP_HOST")
    hub.add_argument("--port", type=int, help="default: URBANSTACK_HUB_PORT")
    hub.set_defaults(func=_hub)

    demo = sub.add_parser("demo", help="platform up, example municipalities provisioned, status printed")
    demo.set_defaults(func=_demo)

    tool = sub.add_parser("tool", help="City Tools: scaffold one, run one locally as a municipality")
    tool_sub = tool.add_subparsers(dest="tool_command", required=True)
    new = tool_sub.add_parser("new", help="scaffold a tool: CityTool manifest, package, tests, Dockerfile")
    new.add_argument("name", help="tool name (a slug, e.g. parkplatz-belegung)")
    new.add_argument("--dir", help="where to write it (default: ./NAME)")
    new.add_argument("--owner", default="guetersloh", help="slug of the municipality that builds it")
    new.set_defaults(func=_tool_new)
    for command, func, text in (
            ("run", _tool_run, "run a tool as a local process with the credentials its Deployment gets"),
            ("webhook-secret", _tool_webhook_secret, "the signing secret of one webhook subscription")):
        parser_ = tool_sub.add_parser(command, help=text)
        parser_.add_argument("name", help="tool name (as in the CityTool)")
        parser_.add_argument("--municipality", required=True, help="slug of a municipality that switched it on")
        parser_.add_argument("--kubeconfig", help="default: KUBECONFIG, else the local platform's admin kubeconfig")
        if command == "run":
            parser_.add_argument("--module", help="package.module[:function] of the tool (default: built-in "
                                                  "tools, else <name_with_underscores>.tool)")
        else:
            parser_.add_argument("--url", required=True, help="the subscription's webhook URL")
        parser_.set_defaults(func=func)

    mqtt = sub.add_parser("mqtt", help="the MQTT broker of SensorThings (docs/sensorthings.md)")
    mqtt_sub = mqtt.add_subparsers(dest="mqtt_command", required=True)
    mqtt_seed = mqtt_sub.add_parser("seed", help="write the broker's first dynamic-security file (admin from "
                                                 "URBANSTACK_MQTT_ADMIN_USER/_PASSWORD) unless it exists")
    mqtt_seed.add_argument("path", help="the file the broker's plugin_opt_config_file names")
    mqtt_seed.set_defaults(func=_mqtt_seed)

    sett = sub.add_parser("settings", help="the URBANSTACK_* settings in force and their meaning")
    sett.set_defaults(func=_settings)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        s = Settings.from_env()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        return args.func(args, s)
    except MissingSetting as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
