"""Fixtures: the dev and prod stacks, each declared once per session under mocks."""

import pytest
from stack_harness import SECRETS, Installation, stack_values, synthesize


@pytest.fixture(scope="session")
def dev() -> Installation:
    return synthesize(stack_values("dev"), {k: v for k, v in SECRETS.items() if k != "keycloakDbPassword"})


@pytest.fixture(scope="session")
def prod() -> Installation:
    return synthesize(stack_values("prod"), {k: v for k, v in SECRETS.items()
                                             if k in ("warehousePassword", "keycloakDbPassword", "mqttAdminPassword")})


@pytest.fixture(scope="session", params=["dev", "prod"])
def stack(request, dev, prod) -> Installation:
    return {"dev": dev, "prod": prod}[request.param]
