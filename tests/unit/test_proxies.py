"""Which address a request counts under (urbanstack/proxies.py); the end-to-end check through
the real HTTP server is tests/integration/test_api_quota.py."""

import ipaddress

import pytest

from urbanstack.proxies import client_address

INGRESS = (ipaddress.ip_network("10.244.0.0/16"),)


@pytest.mark.parametrize("peer, forwarded, trusted, expected", [
    # A direct client is the client, whatever it claims.
    ("198.51.100.7", ["203.0.113.9"], (), "198.51.100.7"),
    ("127.0.0.1", ["203.0.113.9"], (), "127.0.0.1"),
    ("198.51.100.7", ["203.0.113.9"], INGRESS, "198.51.100.7"),
    # Behind the ingress: the hop the ingress appended, not what the client wrote before it.
    ("10.244.1.5", ["203.0.113.9"], INGRESS, "203.0.113.9"),
    ("10.244.1.5", ["1.1.1.1, 203.0.113.9"], INGRESS, "203.0.113.9"),
    ("10.244.1.5", ["1.1.1.1", "203.0.113.9, 10.244.2.2"], INGRESS, "203.0.113.9"),
    ("10.244.1.5", ["2001:db8::1"], INGRESS, "2001:db8::1"),
    # Not an address: the peer, never a new bucket per string.
    ("10.244.1.5", ["not-an-address"], INGRESS, "10.244.1.5"),
    ("10.244.1.5", ["203.0.113.9, x"], INGRESS, "10.244.1.5"),
    ("10.244.1.5", [], INGRESS, "10.244.1.5"),
    # Only proxies in the chain: the leftmost.
    ("10.244.1.5", ["10.244.3.3, 10.244.2.2"], INGRESS, "10.244.3.3"),
    ("::ffff:10.244.1.5", ["203.0.113.9"], INGRESS, "203.0.113.9"),
])
def test_client_address(peer, forwarded, trusted, expected):
    assert client_address(peer, forwarded, trusted) == expected
