"""The operator's work queue: changes before creations before drift repairs, and nobody starves."""

import threading

import pytest

from urbanstack.operator.workqueue import CHANGE, CREATE, DRIFT, WorkQueue


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _order(queue: WorkQueue) -> list[str]:
    taken = []
    while queue.pending():
        taken.append(queue.take().key)
    return taken


def test_a_change_goes_before_a_thousand_waiting_creations_and_repairs():
    queue = WorkQueue(1, clock=Clock())
    for i in range(1000):
        queue.submit(f"new-{i}", CREATE, lambda: None)
        queue.submit(f"old-{i}", DRIFT, lambda: None)
    queue.submit("changed", CHANGE, lambda: None)
    order = _order(queue)
    assert order[0] == "changed"
    assert order[1:1001] == [f"new-{i}" for i in range(1000)]   # creations in arrival order
    assert order[1001:] == [f"old-{i}" for i in range(1000)]


def test_waiting_work_is_promoted_so_repairs_are_not_starved_by_a_stream_of_changes():
    clock = Clock()
    queue = WorkQueue(1, promote_after=30, fair_every=3, clock=clock)
    queue.submit("repair", DRIFT, lambda: None)
    queue.submit("new", CREATE, lambda: None)
    clock.now = 59.0   # one class up: goes before creations submitted later, still behind changes
    queue.submit("newer", CREATE, lambda: None)
    queue.submit("change-0", CHANGE, lambda: None)
    assert queue.take().key == "change-0"
    clock.now = 61.0   # both waiting ones promoted; a stream of changes keeps coming
    taken = []
    for i in range(1, 9):
        queue.submit(f"change-{i}", CHANGE, lambda: None)
        taken.append(queue.take().key)
    # After three turns that passed over a promoted item (change-0 was the first), the oldest promoted
    # one goes; the changes keep their order.
    assert taken == ["change-1", "change-2", "repair", "change-3", "change-4", "change-5", "new", "change-6"]
    assert _order(queue) == ["change-7", "change-8", "newer"]


def test_a_change_is_not_put_behind_a_batch_of_creations_that_waited_long_enough_to_be_promoted():
    """1,000 municipalities applied at once wait longer than promote_after; a spec change of another
    municipality must still go next (issue 16: its reconcile starts within 5 s)."""
    clock = Clock()
    queue = WorkQueue(8, promote_after=30, clock=clock)
    for i in range(1000):
        queue.submit(f"new-{i}", CREATE, lambda: None)
    clock.now = 120.0
    for i in range(5):   # the workers keep taking creations
        assert queue.take().key == f"new-{i}"
    queue.submit("changed", CHANGE, lambda: None)
    assert queue.take().key == "changed"
    assert queue.take().key == "new-5"


def test_a_municipality_is_queued_once_per_class_and_the_same_future_is_returned():
    queue = WorkQueue(1, clock=Clock())
    first = queue.submit("guetersloh", DRIFT, lambda: "first")
    again = queue.submit("guetersloh", DRIFT, lambda: "second")
    assert again is first and queue.pending() == 1
    queue.submit("guetersloh", CHANGE, lambda: None)   # a change is not swallowed by a queued repair
    assert queue.pending() == 2


def test_workers_run_the_work_and_hand_back_results_and_errors():
    queue = WorkQueue(2).start()
    try:
        done = queue.submit("a", CREATE, lambda: 42)
        failed = queue.submit("b", CREATE, lambda: 1 / 0)
        assert done.result(timeout=10) == 42
        with pytest.raises(ZeroDivisionError):
            failed.result(timeout=10)
    finally:
        queue.stop()


def test_at_most_workers_run_at_once():
    queue = WorkQueue(2).start()
    running, peak, lock, release = [0], [0], threading.Lock(), threading.Event()

    def work():
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        release.wait(5)
        with lock:
            running[0] -= 1

    try:
        futures = [queue.submit(f"m{i}", CREATE, work) for i in range(6)]
        threading.Timer(0.5, release.set).start()
        for future in futures:
            future.result(timeout=10)
        assert peak[0] == 2
    finally:
        queue.stop()


def test_zero_workers_is_refused():
    with pytest.raises(ValueError, match="at least 1"):
        WorkQueue(0)
    with pytest.raises(ValueError, match="fair_every must be at least 1"):
        WorkQueue(1, fair_every=0)
