"""The client address of an HTTP request, believed from X-Forwarded-For only behind a trusted proxy.

Per-address limits (the API's anonymous quota) count under this address, so it must
not be something a client chooses. The rule:

- a peer that is not one of ``URBANSTACK_TRUSTED_PROXIES`` (by default: none) is
  the client, whatever headers it sends;
- behind a trusted peer, X-Forwarded-For is read from the right: each proxy appends
  the address it received the request from, so hops that are trusted proxies are
  skipped and the first other one is the client. Anything to its left was written by
  the client itself and is ignored;
- a hop that is not an IP address ends the walk with the peer's address: a
  malformed header can never mint a new address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def _trusted(address, networks: Sequence[Network]) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address.version == network.version and address in network for network in networks)


def client_address(peer: str, forwarded_for: Iterable[str], trusted: Sequence[Network]) -> str:
    """The client's address for a request from ``peer`` with these X-Forwarded-For values."""
    address = _address(peer)
    if address is None or not _trusted(address, trusted):
        return peer
    hops = [hop for value in forwarded_for for hop in value.split(",")]
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            return peer
        if not _trusted(address, trusted):
            return str(address)
    # Every hop is a trusted proxy: the leftmost one is as close to the client as we can tell.
    return str(address) if hops else peer


class ForwardedClient:
    """ASGI middleware: sets the scope's client to :func:`client_address` (and the scheme to
    X-Forwarded-Proto when a trusted proxy sends one)."""

    def __init__(self, app, trusted: Sequence[Network]):
        self.app = app
        self.trusted = tuple(trusted)

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket") and self.trusted and scope.get("client"):
            peer, port = scope["client"]
            address = _address(peer)
            if address is not None and _trusted(address, self.trusted):
                headers = scope["headers"]
                forwarded = [value.decode("latin-1") for name, value in headers if name == b"x-forwarded-for"]
                scope = dict(scope, client=(client_address(peer, forwarded, self.trusted), port))
                proto = next((value.decode("latin-1").split(",")[-1].strip().lower()
                              for name, value in headers if name == b"x-forwarded-proto"), None)
                if scope["type"] == "http" and proto in ("http", "https"):
                    scope["scheme"] = proto
        await self.app(scope, receive, send)
