"""The drift sweep takes the municipalities from Kopf's watch and lists them from the API
server only every FULL_LISTING_EVERY-th sweep (or while the watch has delivered nothing)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from urbanstack.operator import handlers


def _deliver(event: dict) -> None:
    """Run the Kopf handler as Kopf would, on an event loop (a thread of its own: another test of
    the session may leave this thread marked as running a loop)."""
    coroutine = handlers.municipality_seen(event=event, name=event["object"]["metadata"]["name"])
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, coroutine).result()


class _Custom:
    def __init__(self, items):
        self.items, self.calls = items, 0

    def list_cluster_custom_object(self, group, version, plural):
        self.calls += 1
        return {"items": self.items}


def _m(name: str, generation: int = 1) -> dict:
    return {"metadata": {"name": name, "generation": generation}}


def test_the_watch_feeds_the_sweep_and_a_periodic_listing_drops_what_it_missed(monkeypatch):
    api = _Custom([_m("a"), _m("b")])
    monkeypatch.setattr(handlers, "_custom", lambda: api)
    monkeypatch.setattr(handlers.state, "watched", {})
    monkeypatch.setattr(handlers.state, "sweep_listings", 0)

    assert [m["metadata"]["name"] for m in handlers._municipalities_for_sweep()] == ["a", "b"]
    assert api.calls == 1   # nothing watched yet: listed

    for event in ({"type": None, "object": _m("a")}, {"type": "ADDED", "object": _m("b")},
                  {"type": "MODIFIED", "object": _m("a", 2)}, {"type": "ADDED", "object": _m("gone")},
                  {"type": "DELETED", "object": _m("b")}):
        _deliver(event)
    handlers.state.watched["missed"] = _m("missed")   # its DELETED event never arrived
    seen = handlers._municipalities_for_sweep()
    assert api.calls == 1, "a sweep between full listings must not list"
    assert {m["metadata"]["name"]: m["metadata"]["generation"] for m in seen} == {"a": 2, "gone": 1, "missed": 1}

    for _ in range(handlers.FULL_LISTING_EVERY - 2):
        handlers._municipalities_for_sweep()
    assert api.calls == 1
    api.items = [_m("a", 2), _m("gone")]
    listed = handlers._municipalities_for_sweep()   # the FULL_LISTING_EVERY-th sweep since the first
    assert api.calls == 2 and [m["metadata"]["name"] for m in listed] == ["a", "gone"]
    assert sorted(handlers.state.watched) == ["a", "gone"], "a name the listing lacks is dropped"
