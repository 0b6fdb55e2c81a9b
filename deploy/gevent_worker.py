"""gunicorn's gevent worker, accepting connections in batches once it holds many.

gunicorn's GeventWorker sets `max_accept = 1` on its gevent StreamServer when there
is more than one worker: each turn of a worker's event loop accepts one connection,
so that the workers share new connections evenly. With thousands of connections, a
turn runs thousands of ready greenlets and takes a while, so a worker accepts only a
few connections a second. A burst of connects (the 10,000-connection chaos case) then
overflows the kernel's accept queue (ListenOverflows in `nstat`), and the clients'
handshakes are retried with a doubling back-off: requests waited up to 30 s on the
client's clock while the server took at most 5 s for each.

Here a worker that holds fewer than BALANCED_BELOW connections still accepts one a
turn (a handful of keep-alive connections stays spread over the workers, which is
what throughput at c=8 or c=32 needs); past that, it accepts up to ACCEPT_BATCH a
turn, gevent's own default. A single worker keeps gevent's default throughout, as
with gunicorn's own worker. Not measured: between a few hundred and a few thousand
connections, a worker past the threshold takes more of the new connections than one
below it (the one below has shorter turns, so it is woken more often).
"""
from __future__ import annotations

from gevent.server import StreamServer
from gunicorn.workers import ggevent

BALANCED_BELOW = 256
ACCEPT_BATCH = 100


class BatchAcceptServer(StreamServer):
    _max_accept = StreamServer.max_accept  # gevent's default (one worker: gunicorn leaves it)

    @property
    def max_accept(self) -> int:
        if self._max_accept != 1:
            return self._max_accept
        pool = self.pool  # gunicorn's 1 for several workers: kept while this worker holds few connections
        return ACCEPT_BATCH if pool is not None and len(pool) >= BALANCED_BELOW else 1

    @max_accept.setter
    def max_accept(self, value: int) -> None:
        self._max_accept = value


class GeventWorker(ggevent.GeventWorker):
    """worker_class for deploy/gunicorn.conf.py: gunicorn's, with BatchAcceptServer."""

    def run(self):
        ggevent.StreamServer = BatchAcceptServer  # the name gunicorn's run() builds its server with
        super().run()
