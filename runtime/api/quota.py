"""Query quotas of the API: so many data queries per hour, per municipality or per address.

Who is counted:

- a caller with a token counts against the quota of the token's municipality (the
  tenant of the *caller*, not the owner of the data it reads): ``queries_per_hour`` of
  its ``Municipality`` plan, the preset with its overrides (``spec.plan``). A
  municipality the API's catalogue does not know yet gets the default plan's quota;
- an anonymous caller (open data) counts against its client address:
  ``URBANSTACK_API_ANONYMOUS_QUERIES_PER_HOUR`` per IPv4 address or IPv6 /64 network
  (one household or host usually has a whole /64). Behind a reverse proxy the address
  is the proxy's unless the server is told to trust its ``X-Forwarded-For``
  (uvicorn's ``--forwarded-allow-ips``).

What counts: every REST request under ``/api/v1`` once, and every GraphQL request that
carries a query once per data field it asks for (each alias of ``series``, ``join``,
``observations``, ``dataset`` or ``datasets`` is a query of its own; at least one per
request), whether it then succeeds or not. Health, readiness, metrics and the OpenAPI
document are not counted; neither are requests refused with 401 or 429, so a client that
backs off for ``Retry-After`` seconds gets in. A GraphQL request whose fields do not all
fit into what is left of the quota is refused as a whole, before any of them runs.

The window slides over the last hour in one-minute steps: a query counts for 59 to
60 minutes. Without the usage ledger the counts live in this process's memory: each API
replica counts on its own (with N replicas a municipality gets up to N times its quota)
and a restart starts from zero. With the ledger (``urbanstack serve`` with metering) a
municipality's count is what the ledger recorded as ``quota_queries`` of all replicas,
read at a bounded rate, plus this process's own since that read
(:class:`urbanstack.runtime.metering.quota.SharedCounts`; the sliding hour is then
estimated from whole UTC hours). Anonymous callers are counted per process either way. With a ClickHouse server the operator also sets a per-tenant ClickHouse
quota (``naming.warehouse_quota``) with the same ``queries_per_hour``; it is server-side
and holds across replicas, but it is bound to the tenant's ClickHouse role, so it limits
the tenant's own warehouse user (its tools), not the API, which queries under its own
identity. The embedded chDB has no server-side quota.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections import OrderedDict, deque
from typing import Callable

from urbanstack.operator.models import Plan

from .auth import Principal

WINDOW_SECONDS = 3600.0
SLOTS = 60
ANONYMOUS_LABEL = "anonymous"


class QuotaExceeded(Exception):
    """A caller used its quota; ``retry_after`` whole seconds until one more query fits."""

    def __init__(self, message: str, retry_after: int, label: str):
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.label = label  # metrics label: the municipality, or "anonymous"


class _Window:
    __slots__ = ("slots", "total")

    def __init__(self):
        self.slots: deque[list[int]] = deque()  # [slot number, queries in it], oldest first
        self.total = 0


class SlidingWindow:
    """Counts events per key over the last ``window`` seconds in ``slots`` steps.

    ``acquire(key, limit, count)`` admits and counts ``count`` events at once, or none and
    returns how many seconds until all of them would fit. At most ``max_keys`` keys are kept (least recently used go
    first), so a flood of anonymous addresses cannot grow memory without bound.
    """

    def __init__(self, window: float = WINDOW_SECONDS, slots: int = SLOTS, *, max_keys: int = 100_000,
                 clock: Callable[[], float] = time.monotonic):
        if window <= 0 or slots < 1:
            raise ValueError("window must be positive and slots at least 1")
        self._slot = window / slots
        self._slots = slots
        self._max_keys = max_keys
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: OrderedDict[object, _Window] = OrderedDict()

    def acquire(self, key: object, limit: int, count: int = 1) -> float | None:
        """None if admitted (and counted); else the seconds until the window has room for ``count``."""
        now = self._clock()
        current = math.floor(now / self._slot)
        with self._lock:
            window = self._windows.get(key)
            if window is None:
                window = self._windows[key] = _Window()
                while len(self._windows) > self._max_keys:
                    self._windows.popitem(last=False)
            else:
                self._windows.move_to_end(key)
            while window.slots and window.slots[0][0] <= current - self._slots:
                window.total -= window.slots.popleft()[1]
            if window.total + count > limit:
                freed = 0
                for number, used in window.slots:
                    freed += used
                    if window.total - freed + count <= limit:
                        return max((number + self._slots) * self._slot - now, 0.0)
                return self._slot  # more than the limit: never fits; ask again later
            if window.slots and window.slots[-1][0] == current:
                window.slots[-1][1] += count
            else:
                window.slots.append([current, count])
            window.total += count
            return None

    def used(self, key: object) -> int:
        with self._lock:
            window = self._windows.get(key)
            return 0 if window is None else window.total


def client_network(host: str | None) -> str:
    """The address an anonymous caller is counted under: the IPv4 address, or the IPv6 /64."""
    if not host:
        return "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host  # a name, e.g. "testclient"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class QueryQuota:
    """Decides whether a caller may run one more data query, and counts it.

    ``tenant_limit(slug)`` gives a municipality's queries per hour (None: not known,
    the default plan's quota applies); ``anonymous_per_hour`` is the per-address
    limit of callers without a token, 0 for none.
    """

    def __init__(self, tenant_limit: Callable[[str], int | None], anonymous_per_hour: int, *,
                 window: SlidingWindow | None = None, shared=None, charged: Callable[[str, int], None] | None = None):
        if anonymous_per_hour < 0:
            raise ValueError("anonymous_per_hour: give a number of queries per hour, or 0 for no limit")
        self._tenant_limit = tenant_limit
        self._anonymous = anonymous_per_hour
        self._window = window or SlidingWindow()
        self._default = Plan().quotas().queries_per_hour
        # Tenants' counts from the ledger (SharedCounts); ``charged`` tells the API meter what was charged.
        self._shared, self._charged = shared, charged

    def charge(self, principal: Principal | None, client_host: str | None, count: int = 1) -> None:
        """Count ``count`` queries at once, or none and raise :class:`QuotaExceeded`."""
        if principal is None:
            if self._anonymous == 0:
                return
            key, limit, label = ("address", client_network(client_host)), self._anonymous, ANONYMOUS_LABEL
        else:
            key, label = ("tenant", principal.tenant), principal.tenant
            limit = self._tenant_limit(principal.tenant) or self._default
        if principal is not None and self._shared is not None and count <= limit:
            used = self._shared.take(principal.tenant, count, limit)
            wait = None if used is None else 60.0  # whole hours in the ledger: ask again in a minute
            if wait is None and self._charged is not None:
                self._charged(principal.tenant, count)
        else:
            wait = self._window.acquire(key, limit, count) if count <= limit else WINDOW_SECONDS
        if wait is None:
            return
        seconds = _whole(wait)
        if count > limit:
            message = (f"this request asks for {count} data queries at once, more than the {limit} queries per "
                       f"hour {'without a token' if principal is None else f'of municipality {label!r}'} allow; "
                       "ask for fewer fields per request")
        elif principal is None:
            message = (f"too many queries without a token from this address: at most {limit} per hour"
                       f"{_needs(count)}; try again in {seconds} s, or sign in to use your municipality's quota")
        else:
            message = (f"municipality {label!r} has used its quota of {limit} queries per hour (spec.plan of its "
                       f"Municipality){_needs(count)}; try again in {seconds} s")
        raise QuotaExceeded(message, seconds, label)


def _needs(count: int) -> str:
    return "" if count == 1 else f" and this request needs {count}"


def _whole(seconds: float) -> int:
    return max(1, math.ceil(seconds))


def plan_limit(catalogue) -> Callable[[str], int | None]:
    """``tenant_limit`` from the API catalogue's Municipality objects."""
    def limit(slug: str) -> int | None:
        municipality = catalogue.municipality(slug)
        return None if municipality is None else municipality.spec.plan.quotas().queries_per_hour
    return limit
