"""Admission: at most ACTIVE_REQUESTS requests per worker run at once, the rest wait their turn.

Under gevent every accepted connection is a greenlet. With thousands of them sending at
once, one turn of the event loop runs thousands of requests, so a reply from Redis or
PostgreSQL waits that long (seconds) to be read: healthy dependencies then look frozen,
their timeouts fire, and the request fails over to the database, which has a pool of 8.
That was the 10,000-connection chaos case: thousands of 503s. Here a request waits at
the gate *before* its first dependency call, so the ones running keep their calls short,
and requests are admitted strictly first come, first served (shared.gate.FairGate:
gevent's Semaphore lets a newcomer take a slot released for a waiter, which starves the
oldest). The wait counts
against REQUEST_TIMEOUT_MS (api.deadline sits outside this layer).

Probes (/livez, /readyz, /health) skip the gate: an overloaded instance still answers them.
Outside gevent (Flask's test client, `flask run`) this is a pass-through.
"""
from __future__ import annotations

from api.auth import PUBLIC_PATHS
from shared.deadline import green
from shared.gate import FairGate

# Enough to keep both the CPU and the dependencies busy; small enough that one turn of the
# event loop stays short. With 10,000 connections (chaos), 32, 64, 256 and 1,024 all gave
# 0 errors; the smaller ones more throughput (0.76 / 0.75 / 0.64 / 0.69 of the c=32 figure,
# one run each) and a lower p99 (12.8 / 8.8 / 14.1 / 18.9 s). Without the gate: 0.83, but
# 4,767 answers of 503 and 5,059 client timeouts, the oldest requests starved.
ACTIVE_REQUESTS = 64


class Admission:
    def __init__(self, app, slots: int = ACTIVE_REQUESTS):
        self.app = app
        self.slots = slots
        self._gate = None

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") in PUBLIC_PATHS:
            return self.app(environ, start_response)
        gate = self._gate
        if gate is None:
            if not green():
                return self.app(environ, start_response)
            gate = self._gate = FairGate(self.slots)  # created in the worker, after fork
        gate.acquire()
        try:
            return self.app(environ, start_response)
        finally:
            gate.release()
