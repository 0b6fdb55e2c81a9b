"""Cache stores sent after the request that made them, many in one Redis round trip.

A miss stores its list (and the user's row, when it read it) for the next page. Sent by
the request itself, each store is one more round trip: a script call packed, sent and
its reply read, the greenlet switched out and back (on `large`, a build storing nothing
ran `miss_content_based` at 0.65 of the bare baseline against 0.54; BENCHMARKS.md).
Under gevent the API queues the store instead (Cache.writer); one greenlet sends what
is queued as one pipeline, then what queued while it waited, and so on. Under load one
round trip carries every store of a loop turn; at rest a store leaves in the loop turn
that sends the response, before the client can send its next request.

A store stays best effort, as it was: lost if Redis is down (the cache's breaker), if
QUEUE_LIMIT stores already wait (a stalled Redis), or if the worker stops first. The
next request for that list is then a miss again, never a wrong answer (every store
carries the user's version it was computed under: see shared.cache.Cache.store_user).
"""
from __future__ import annotations

import gevent
from redis.exceptions import NoScriptError

from shared.cache import CacheUnavailable

# Stores waiting while one round trip is in flight: ~1-2 KB each. Past it, new ones are
# dropped: a Redis that is slow to answer gets no more than this from one worker.
QUEUE_LIMIT = 2000


class WriteBehind:
    """write(command): command(client_or_pipeline) sends or queues its Redis commands;
    call is the cache's wrapper around a Redis call (its breaker and error counting)."""

    def __init__(self, client, call, limit: int = QUEUE_LIMIT, on_drop=None):
        self.client = client
        self.call = call
        self.limit = limit
        self.on_drop = on_drop  # called for each store dropped because the queue was full
        self.dropped = 0  # stores not sent because QUEUE_LIMIT were waiting
        self.round_trips = 0
        self._queue: list = []
        self._draining = False

    def write(self, command) -> None:
        if len(self._queue) >= self.limit:
            self.dropped += 1
            if self.on_drop is not None:
                self.on_drop()
            return
        self._queue.append(command)
        if not self._draining:
            self._draining = True
            gevent.spawn(self._drain)

    def _drain(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                try:
                    self.call(lambda: self._send(batch))
                except CacheUnavailable:
                    pass  # logged and counted by the cache; these stores are lost
        finally:
            self._draining = False

    def _send(self, batch: list, retry: bool = True) -> None:
        self.round_trips += 1
        if len(batch) == 1:
            batch[0](self.client)  # a pipeline costs the client more than one command
            return
        pipe = self.client.pipeline(transaction=False)
        for command in batch:
            command(pipe)
        # A pipeline with scripts asks Redis whether it has them (SCRIPT EXISTS) before
        # every execute: one more round trip a batch. Redis keeps a script once it ran it;
        # one that lost them (restarted, SCRIPT FLUSH) answers NOSCRIPT, and the batch is
        # sent again with them loaded (its stores are idempotent).
        scripts, pipe.scripts = pipe.scripts, set()
        try:
            pipe.execute()
        except NoScriptError:
            if not retry:
                raise
            for script in scripts:
                script.sha = self.client.script_load(script.script)
            self._send(batch, retry=False)
