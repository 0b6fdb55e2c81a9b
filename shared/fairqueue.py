"""A first-come, first-served queue for redis-py's BlockingConnectionPool (its queue_class).

The API lets at most REDIS_POOL_SIZE requests per worker talk to Redis at once; the
others wait for a connection. redis-py's default LifoQueue (like gevent's queues) lets
a newcomer take a connection that was just released for a waiter, so under thousands of
concurrent requests the oldest waiters can starve until their deadline: in the
10,000-connection chaos case that was 3,437 answers of 503 after 30 s. Here a released
connection is handed straight to the longest-waiting request, and newcomers queue behind
it. Connections themselves are still reused last-in first-out, as with LifoQueue, so
the pool only opens new ones under real demand.
"""
from __future__ import annotations

import threading
from collections import deque
from queue import Empty, Full


class _Waiter:
    __slots__ = ("event", "item", "state")

    def __init__(self):
        self.event = threading.Event()
        self.item = None
        self.state = "waiting"  # -> "given" | "gone"


class FairLifoQueue:
    def __init__(self, maxsize: int):
        self.maxsize = maxsize
        self.queue: list = []  # free items, the most recently released last (redis-py reads this attribute)
        self._waiters: deque[_Waiter] = deque()
        self._lock = threading.Lock()  # held only between non-blocking steps

    def qsize(self) -> int:
        return len(self.queue)

    def put_nowait(self, item) -> None:
        with self._lock:
            while self._waiters:
                waiter = self._waiters.popleft()
                if waiter.state == "waiting":
                    waiter.item, waiter.state = item, "given"
                    waiter.event.set()
                    return
            if len(self.queue) >= self.maxsize:
                raise Full
            self.queue.append(item)

    def get(self, block: bool = True, timeout: float | None = None):
        with self._lock:
            if self.queue and not self._waiters:
                return self.queue.pop()
            if not block:
                raise Empty
            waiter = _Waiter()
            self._waiters.append(waiter)
        waiter.event.wait(timeout)
        with self._lock:
            if waiter.state == "given":  # also when it was handed over just as the wait timed out
                return waiter.item
            waiter.state = "gone"
            try:
                self._waiters.remove(waiter)
            except ValueError:
                pass
        raise Empty
