"""Ingest: the connectors served.

- :mod:`.push` — HTTP endpoints sources push to (LoRaWAN webhooks, SensorThings,
  our own event JSON/NDJSON, CSV/XLSX uploads with a preview), authenticated per
  tenant by a Keycloak token or the tenant's webhook key;
- :mod:`.pull` — a scheduler that fetches the sources each municipality declares in
  ``spec.sources``, keeps a cursor per sensor and publishes only what is new;
- :mod:`.tenants` — what both share: the tenant's credentials (webhook key, its own
  Kafka user) read from its ``urbanstack-ingest`` Secret, one producer per tenant,
  and the plan's daily event quota;
- :mod:`.service` — push and pull in one process (``urbanstack ingest``).

Everything is published with :class:`urbanstack.runtime.producer.Publisher`, which
returns only once Kafka acknowledged every message: a 2xx answer (push) or an
advanced cursor (pull) means nothing is lost.
"""

from urbanstack.runtime.ingest.tenants import (DailyQuota, IngestCredentials, KubernetesCredentials,
                                               StaticCredentials, TenantPublishers, tenant_of_key)

__all__ = ["DailyQuota", "IngestCredentials", "KubernetesCredentials", "StaticCredentials", "TenantPublishers",
           "tenant_of_key"]
