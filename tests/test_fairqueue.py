"""shared.fairqueue: the Redis pool's waiters are served first come, first served."""
import threading
import time
from queue import Empty, Full

import pytest

from shared.fairqueue import FairLifoQueue


def _wait_until(cond, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.001)


def test_free_items_are_reused_last_in_first_out_and_the_size_is_capped():
    q = FairLifoQueue(2)
    q.put_nowait(None)
    q.put_nowait("conn")
    with pytest.raises(Full):
        q.put_nowait("extra")
    assert q.get() == "conn" and q.get() is None
    with pytest.raises(Empty):
        q.get(block=False)


def test_a_released_item_goes_to_the_longest_waiter_never_to_a_newcomer():
    q = FairLifoQueue(3)
    got = {}
    threads = []
    for name in ("first", "second", "third"):
        t = threading.Thread(target=lambda n=name: got.__setitem__(n, q.get(timeout=5)))
        t.start()
        threads.append(t)
        _wait_until(lambda k=len(threads): len(q._waiters) == k)
    q.put_nowait("a")
    with pytest.raises(Empty):  # a newcomer does not jump the queue, even right after a release
        q.get(block=False)
    q.put_nowait("b")
    q.put_nowait("c")
    for t in threads:
        t.join(5)
    assert got == {"first": "a", "second": "b", "third": "c"}
    assert q.queue == []


def test_a_waiter_that_timed_out_leaves_the_line():
    q = FairLifoQueue(1)
    with pytest.raises(Empty):
        q.get(timeout=0.05)
    assert len(q._waiters) == 0
    q.put_nowait("conn")  # kept for the next caller, not handed to the one that gave up
    assert q.get(block=False) == "conn"
