"""PostgreSQL 15 from Debian for the hubs' metadata store.

Our own cluster, independent of the one Debian's package may run on 5432: its own
port (``URBANSTACK_POSTGRES_PORT``), its own data directory, initialised once with
SCRAM-SHA-256 for every connection, listening on 127.0.0.1 only. Before the server
first listens, single-user mode creates the database ``urbanstack`` and two roles
with generated passwords (``secrets/``): ``urbanstack_owner`` owns the schema and runs
the migrations; ``urbanstack_app``, which the services use, may only read and write
rows (default privileges cover tables that later migrations create), and its
statements stop after 5 s.

PostgreSQL refuses to run as root. As root the server runs as Debian's ``postgres``
user, which cannot enter root's private home, so the cluster then lives in
``/var/lib/postgresql/urbanstack/<key of the state folder>`` (linked from
``<state>/postgres``); otherwise in ``<state>/postgres``. ``dev down --purge`` removes
it either way.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from urbanstack.devplatform import debian, secrets, system_user
from urbanstack.devplatform.progress import Step
from urbanstack.devplatform.service import Service

BIN = Path("/usr/lib/postgresql/15/bin")
DATABASE = "urbanstack"
SUPERUSER = "postgres"
OWNER_ROLE = "urbanstack_owner"
APP_ROLE = "urbanstack_app"
APP_STATEMENT_TIMEOUT = "5s"
APP_CONNECTION_LIMIT = 50
SYSTEM_USER = "postgres"  # Debian's, when we run as root
_ROOT_CLUSTERS = Path("/var/lib/postgresql/urbanstack")
_MARKER = ".urbanstack-provisioned"


_as_root = system_user.as_root


def password(settings, role: str) -> str:
    """The generated password of ``role`` (superuser, owner or app), kept 0600 in the state folder."""
    files = {SUPERUSER: "postgres-superuser-password", OWNER_ROLE: "postgres-owner-password",
             APP_ROLE: "postgres-app-password"}
    return secrets.get_or_create(settings.secrets_dir, files[role])


def url(settings, role: str = APP_ROLE, database: str = DATABASE) -> str:
    """SQLAlchemy URL of the local cluster for ``role`` (contains the password: never log it)."""
    return (f"postgresql+psycopg://{role}:{password(settings, role)}@127.0.0.1:{settings.postgres_port}/"
            f"{database}")


def cluster_dir(settings) -> Path:
    if _as_root():
        return system_user.folder(_ROOT_CLUSTERS, settings.state_dir)
    return settings.state_dir / "postgres"


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def role_statements(settings) -> list[str]:
    """Create or update both roles and every password (idempotent; cluster-wide)."""
    create = " ".join(f"IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {_quote(role)}) "
                      f"THEN CREATE ROLE {role}; END IF;" for role in (OWNER_ROLE, APP_ROLE))
    limits = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
    return [
        f"DO $$BEGIN {create} END$$",
        f"ALTER ROLE {SUPERUSER} WITH PASSWORD {_quote(password(settings, SUPERUSER))}",
        f"ALTER ROLE {OWNER_ROLE} WITH {limits} PASSWORD {_quote(password(settings, OWNER_ROLE))}",
        f"ALTER ROLE {APP_ROLE} WITH {limits} CONNECTION LIMIT {APP_CONNECTION_LIMIT} "
        f"PASSWORD {_quote(password(settings, APP_ROLE))}",
        f"ALTER ROLE {APP_ROLE} SET statement_timeout = {_quote(APP_STATEMENT_TIMEOUT)}",
        f"ALTER ROLE {APP_ROLE} SET idle_in_transaction_session_timeout = '60s'",
    ]


def database_statements(database: str) -> list[str]:
    """Least privilege inside ``database`` (run connected to it): the owner role owns the
    schema; the app role may connect and use rows of every table, now and later."""
    return [
        f"REVOKE ALL ON DATABASE {database} FROM PUBLIC",
        f"GRANT CONNECT, TEMPORARY ON DATABASE {database} TO {OWNER_ROLE}",
        f"GRANT CONNECT ON DATABASE {database} TO {APP_ROLE}",
        f"ALTER SCHEMA public OWNER TO {OWNER_ROLE}",
        "REVOKE ALL ON SCHEMA public FROM PUBLIC",
        f"GRANT USAGE ON SCHEMA public TO {APP_ROLE}",
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {OWNER_ROLE} IN SCHEMA public "
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {APP_ROLE}",
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {OWNER_ROLE} IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO {APP_ROLE}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {APP_ROLE}",
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {APP_ROLE}",
    ]


def create_database(settings, database: str) -> None:
    """A new database on the running cluster, provisioned like ``urbanstack`` (e.g. one per test session)."""
    import psycopg

    with psycopg.connect(**_superuser(settings), dbname="postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {database} OWNER {OWNER_ROLE}")
    with psycopg.connect(**_superuser(settings), dbname=database, autocommit=True) as conn:
        for statement in database_statements(database):
            conn.execute(statement)


def drop_database(settings, database: str) -> None:
    import psycopg

    with psycopg.connect(**_superuser(settings), dbname="postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


def _superuser(settings) -> dict:
    return {"host": "127.0.0.1", "port": settings.postgres_port, "user": SUPERUSER,
            "password": password(settings, SUPERUSER), "connect_timeout": 5}


class Postgres(Service):
    name = "postgres"

    @property
    def cluster(self) -> Path:
        return cluster_dir(self.settings)

    @property
    def data(self) -> Path:
        return self.cluster / "data"

    @property
    def socket_dir(self) -> Path:
        return self.cluster / "socket" if _as_root() else self.settings.run_dir

    def install(self) -> None:
        debian.ensure_installed("postgresql", provides=BIN / "postgres", what="PostgreSQL")

    def _run_as_server_user(self, command: list[str], **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(self._as_server_user(command), cwd=self.cluster, capture_output=True, text=True,
                              timeout=120, **kwargs)

    @staticmethod
    def _as_server_user(command: list[str]) -> list[str]:
        return system_user.command_as(SYSTEM_USER, command)

    def _own(self, path: Path) -> None:
        system_user.own(path, SYSTEM_USER)

    def _write(self, path: Path, text: str) -> None:
        system_user.write_private(path, text, SYSTEM_USER)

    def _secret_free(self, text: str) -> str:
        for role in (SUPERUSER, OWNER_ROLE, APP_ROLE):
            text = text.replace(password(self.settings, role), "***")
        return text[-1500:]

    def _single_user(self, database: str, statements: list[str]) -> None:
        """Run SQL before the server listens (postgres --single); stops at the first error."""
        script = "".join(f"{statement};\n\n" for statement in statements)
        result = self._run_as_server_user(
            [str(BIN / "postgres"), "--single", "-j", "-D", str(self.data), "-c", "exit_on_error=on", database],
            input=script)
        if result.returncode != 0:
            raise RuntimeError(f"PostgreSQL set-up in {database} failed: "
                               f"{self._secret_free(result.stdout + result.stderr)}")

    def prepare(self) -> None:
        s = self.settings
        if _as_root():
            _ROOT_CLUSTERS.mkdir(parents=True, exist_ok=True)
            self._own(_ROOT_CLUSTERS.parent)  # Debian's own folder; already the postgres user's
        self.cluster.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._own(self.cluster)
        if _as_root():
            self.socket_dir.mkdir(exist_ok=True, mode=0o700)
            self._own(self.socket_dir)
            link = s.state_dir / "postgres"
            if not link.is_symlink():
                link.symlink_to(self.cluster)
        if not (self.data / _MARKER).exists():
            self._initdb()
        self._single_user("postgres", role_statements(s))  # passwords follow the secret files

    def _initdb(self) -> None:
        shutil.rmtree(self.data, ignore_errors=True)  # a half-done earlier attempt
        with Step("PostgreSQL: initialising the cluster (once)"):
            pwfile = self.cluster / "initdb-password"
            self._write(pwfile, password(self.settings, SUPERUSER) + "\n")
            try:
                result = self._run_as_server_user([
                    str(BIN / "initdb"), "-D", str(self.data), f"--username={SUPERUSER}", f"--pwfile={pwfile}",
                    "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C.UTF-8", "--no-instructions"])
            finally:
                pwfile.unlink(missing_ok=True)
            if result.returncode != 0:
                raise RuntimeError(f"initdb failed: {self._secret_free(result.stdout + result.stderr)}")
            self._write(self.data / "pg_hba.conf",
                        "# urbanstack: passwords (SCRAM-SHA-256) on the socket and on 127.0.0.1, nothing else\n"
                        "local all all scram-sha-256\n"
                        "host  all all 127.0.0.1/32 scram-sha-256\n")
            self._single_user("postgres", role_statements(self.settings)
                              + [f"CREATE DATABASE {DATABASE} OWNER {OWNER_ROLE}"])
            self._single_user(DATABASE, database_statements(DATABASE))
            self._write(self.data / _MARKER, "")

    def command(self):
        s = self.settings
        return self._as_server_user([
            str(BIN / "postgres"), "-D", str(self.data),
            "-c", "listen_addresses=127.0.0.1", "-c", f"port={s.postgres_port}",
            "-c", f"unix_socket_directories={self.socket_dir}",
            "-c", "password_encryption=scram-sha-256",
            "-c", "max_connections=100", "-c", "logging_collector=off",
        ]), dict(os.environ)

    def ready(self) -> bool:
        try:
            return subprocess.run([str(BIN / "pg_isready"), "-q", "-h", "127.0.0.1", "-p",
                                   str(self.settings.postgres_port), "-t", "2"], timeout=5).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    def endpoint(self) -> str:
        return (f"postgresql://127.0.0.1:{self.settings.postgres_port}/{DATABASE} "
                f"(roles {OWNER_ROLE}, {APP_ROLE})")

    def purge(self) -> None:
        if _as_root() and self.cluster.is_dir():
            shutil.rmtree(self.cluster)
