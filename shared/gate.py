"""FairGate: a counting semaphore for greenlets that hands a released slot to the longest waiter.

gevent's own Semaphore lets a greenlet that arrives while a released slot is on its way
to a waiter take it (the waiter is only woken on the next turn of the loop), so under
steady contention the oldest waiters can starve: requests then wait out their whole
deadline for a PostgreSQL connection (503s at concurrency 32 in `make bench`) or for
admission. Here a released slot goes to the longest waiter, and a newcomer queues
behind the waiters. Used by api.admission (requests) and shared.db (the connection pool),
under gevent workers only.
"""
from __future__ import annotations

from collections import deque


class FairGate:
    def __init__(self, slots: int):
        from gevent.event import Event

        self._event = Event
        self.free = slots
        self.waiters: deque = deque()

    def acquire(self, timeout: float | None = None) -> bool:
        """Take a slot, waiting at most `timeout` seconds (None: until one is free). False on timeout."""
        if self.free > 0 and not self.waiters:
            self.free -= 1
            return True
        turn = self._event()
        self.waiters.append(turn)
        try:
            if turn.wait(timeout):
                return True
        except BaseException:  # the request's deadline, or the worker shutting down
            if turn.is_set():
                self.release()  # a slot was handed over just now: pass it on
            else:
                self.waiters.remove(turn)
            raise
        if turn.is_set():  # handed over as the wait timed out: ours after all
            return True
        self.waiters.remove(turn)
        return False

    def release(self) -> None:
        if self.waiters:
            self.waiters.popleft().set()  # the slot goes to the longest waiter
        else:
            self.free += 1
