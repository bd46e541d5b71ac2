"""The panel cache: an entry lives for its seconds only, concurrent misses render once, and the
memory it holds is bounded."""

from __future__ import annotations

import threading
import time

from urbanstack.runtime.hubs.gov.panelcache import PanelCache


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_an_entry_lives_for_its_seconds_and_keys_are_separate():
    clock = Clock()
    cache = PanelCache(seconds=10, clock=clock)
    calls = []
    render = lambda text: (lambda: calls.append(text) or text)  # noqa: E731
    assert cache.get(("d1", "gue"), render("a")) == "a"
    assert cache.get(("d1", "gue"), render("b")) == "a"  # cached
    assert cache.get(("d1", "bi"), render("c")) == "c"   # another reader: its own entry
    clock.now = 10.0
    assert cache.get(("d1", "gue"), render("d")) == "d"  # expired: rendered anew
    assert calls == ["a", "c", "d"] and cache.hits == 1 and cache.misses == 3


def test_concurrent_misses_render_once():
    cache = PanelCache(seconds=10)
    started = threading.Event()
    renders = []

    def slow():
        renders.append(1)
        started.set()
        time.sleep(0.2)
        return "panels"

    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.get("k", slow))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert results == ["panels"] * 8 and len(renders) == 1


def test_a_failed_render_is_not_cached_and_the_next_request_renders():
    cache = PanelCache(seconds=10)

    def fail():
        raise RuntimeError("warehouse down")

    try:
        cache.get("k", fail)
    except RuntimeError:
        pass
    assert cache.get("k", lambda: "ok") == "ok"


def test_memory_is_bounded():
    cache = PanelCache(seconds=100, entries=3, max_bytes=10_000)
    for n in range(10):
        cache.get(n, lambda n=n: str(n) * 1000)
    assert len(cache._items) <= 3 and cache._bytes <= 10_000
    assert list(cache._items) == [7, 8, 9] or len(cache._items) < 3
    huge = "x" * (3 * 2**20)
    assert cache.get("huge", lambda: huge) == huge and "huge" not in cache._items
