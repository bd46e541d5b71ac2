"""A stand-in Keycloak for API tests: RSA keys made in the test, a JWKS served on
127.0.0.1 under Keycloak's URL layout, and tokens minted with them."""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

CERTS_SUFFIX = "/protocol/openid-connect/certs"


def new_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class LocalIssuer:
    def __init__(self):
        self.keys: dict[str, object] = {}   # kid -> private key, published for every realm
        self.fetches = 0
        self.kid = self.add_key()
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                if not (self.path.startswith("/realms/") and self.path.endswith(CERTS_SUFFIX)):
                    self.send_error(404)
                    return
                issuer.fetches += 1
                keys = []
                for kid, key in list(issuer.keys.items()):
                    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
                    keys.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
                body = json.dumps({"keys": keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def add_key(self) -> str:
        kid = uuid.uuid4().hex
        self.keys[kid] = new_key()
        return kid

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def realm_url(self, realm: str) -> str:
        return f"{self.url}/realms/{realm}"

    def token(self, *, realm: str = "urbanstack", tenant: str | None = None, roles=("gov-viewer",),
              audience="{tenant}-api", lifetime: int = 300, kid: str | None = None, key=None,
              issuer: str | None = None, azp: str | None = "{tenant}-gov-hub", **claims) -> str:
        """A token shaped like the identity provisioner's: ``organization`` names the tenant in
        the shared realm, roles are client roles of ``<tenant>-api``, ``azp`` the Gov Hub client.
        Pass a claim as None to leave it out."""
        now = int(time.time())
        slug = tenant or realm.removeprefix("muni-")
        payload = {"iss": issuer or self.realm_url(realm), "sub": str(uuid.uuid4()), "iat": now, "exp": now + lifetime,
                   "typ": "Bearer", "resource_access": {f"{slug}-api": {"roles": list(roles)}}}
        if tenant is not None and realm == "urbanstack":
            payload["organization"] = [tenant]
        if audience is not None:
            payload["aud"] = audience.format(tenant=slug)
        if azp is not None:
            payload["azp"] = azp.format(tenant=slug)
        payload.update(claims)
        payload = {k: v for k, v in payload.items() if v is not None}
        kid = kid or self.kid
        return jwt.encode(payload, key or self.keys[kid], algorithm="RS256", headers={"kid": kid})
