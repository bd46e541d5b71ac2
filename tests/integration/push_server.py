"""Serve the push endpoints with uvicorn in a process of their own, as ``urbanstack
ingest`` does (its catalogue given instead of watched), so a test can send it real
HTTP and measure that process. Started by :func:`ingest_harness.push_service`.

    python push_server.py '{"port": 8765, "municipalities": [...], "tools": [...],
                            "kafka": {...}, "metadata_timeout": 2}'
"""

from __future__ import annotations

import json
import sys

from ingest_harness import runtime_credentials

from urbanstack.operator.models import parse_citytool, parse_municipality
from urbanstack.runtime.api import Catalogue, TokenVerifier
from urbanstack.runtime.ingest.push import create_push_app
from urbanstack.runtime.ingest.tenants import DailyQuota, TenantPublishers
from urbanstack.serve import http_server
from urbanstack.settings import Settings


def main(spec: dict) -> None:
    settings = Settings.from_env()
    credentials = runtime_credentials(settings)
    catalogue = Catalogue([parse_municipality(m) for m in spec["municipalities"]],
                          [parse_citytool(t) for t in spec["tools"]])
    options = {"metadata_timeout": spec["metadata_timeout"]} if "metadata_timeout" in spec else {}
    publishers = TenantPublishers(settings, credentials, extra_config=spec.get("kafka"), **options)
    app = create_push_app(catalogue, publishers, credentials, quota=DailyQuota(),
                          verifier=TokenVerifier(settings.keycloak_url, "{tenant}-api"))
    http_server(app, settings, "127.0.0.1", spec["port"]).run()


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
