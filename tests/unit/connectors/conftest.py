from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
OWN = REPO / "tests" / "fixtures" / "connectors"
SHARED = REPO.parent / "shared" / "fixtures"


@pytest.fixture
def own():
    return lambda name: (OWN / name).read_bytes()


@pytest.fixture
def shared():
    def read(name: str) -> bytes:
        path = SHARED / name
        if not path.is_file():
            pytest.skip(f"shared sample data not available: {path} is missing")
        return path.read_bytes()
    return read
