"""gunicorn's gevent worker, accepting connections in batches while they queue up.

gunicorn's GeventWorker sets `max_accept = 1` on its gevent StreamServer when there
is more than one worker: each turn of a worker's event loop accepts one connection,
so that the workers share new connections evenly. With thousands of connections, a
turn runs thousands of ready greenlets and takes a while, so a worker accepts only a
few connections a second. A burst of connects (the 10,000-connection chaos case) then
overflows the kernel's accept queue (ListenOverflows in `nstat`), and the clients'
handshakes are retried with a doubling back-off: requests waited up to 30 s on the
client's clock while the server took at most 5 s for each.

Here a worker accepts up to ACCEPT_BATCH a turn (gevent's own default) while at least
QUEUED_BATCH_AT connections wait in the listening socket's accept queue (read with
TCP_INFO, Linux), and one a turn otherwise, as gunicorn does: a handful of new
keep-alive connections (a benchmark at c=8 or c=32) stays spread over the workers.
Every worker sees the same queue, so all of them batch during a burst, and the least
busy one, whose turns are shortest, takes the most. A single worker keeps gevent's
default throughout, as with gunicorn's own worker.
"""
from __future__ import annotations

import socket
import struct

from gevent.server import StreamServer
from gunicorn.workers import ggevent

QUEUED_BATCH_AT = 256
ACCEPT_BATCH = 100


def accept_queue(sock) -> int:
    """Connections waiting in a listening socket's accept queue: TCP_INFO's tcpi_unacked,
    which Linux reports for a listener as its queue length (0 where it cannot be read)."""
    try:
        return struct.unpack_from("I", sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 32), 24)[0]
    except (AttributeError, OSError, struct.error):
        return 0


class BatchAcceptServer(StreamServer):
    _max_accept = StreamServer.max_accept  # gevent's default (one worker: gunicorn leaves it)

    @property
    def max_accept(self) -> int:
        if self._max_accept != 1:
            return self._max_accept
        # gunicorn's 1 for several workers: kept unless connections are queuing up.
        listener = getattr(self, "socket", None)
        return ACCEPT_BATCH if listener is not None and accept_queue(listener) >= QUEUED_BATCH_AT else 1

    @max_accept.setter
    def max_accept(self, value: int) -> None:
        self._max_accept = value


class GeventWorker(ggevent.GeventWorker):
    """worker_class for deploy/gunicorn.conf.py: gunicorn's, with BatchAcceptServer."""

    def run(self):
        ggevent.StreamServer = BatchAcceptServer  # the name gunicorn's run() builds its server with
        super().run()
