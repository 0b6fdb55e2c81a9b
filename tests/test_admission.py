"""shared.gate.FairGate (api.admission's gate, shared.db's pool): waiters get slots first come, first served."""
import gevent
import pytest

from shared.gate import FairGate


def test_waiters_are_admitted_in_arrival_order_and_newcomers_queue_behind_them():
    gate = FairGate(1)
    gate.acquire()  # the one running request
    admitted = []

    def request(name):
        gate.acquire()
        admitted.append(name)
        gevent.sleep(0)
        gate.release()

    waiting = [gevent.spawn(request, n) for n in ("first", "second", "third")]
    gevent.sleep(0)  # all three are now waiting
    assert len(gate.waiters) == 3 and gate.free == 0
    gate.release()  # the slot goes to "first"
    late = gevent.spawn(request, "late")  # arrives after the release: must not jump the line
    gevent.joinall(waiting + [late], timeout=5, raise_error=True)
    assert admitted == ["first", "second", "third", "late"]
    assert gate.free == 1 and not gate.waiters


def test_a_request_whose_deadline_passes_while_waiting_leaves_the_line_and_loses_no_slot():
    gate = FairGate(1)
    gate.acquire()
    with pytest.raises(gevent.Timeout):
        with gevent.Timeout(0.05):
            gate.acquire()
    assert not gate.waiters
    gate.release()
    assert gate.free == 1
    gate.acquire()  # the slot is still there for the next request
    assert gate.free == 0


def test_a_wait_with_a_timeout_gives_up_and_leaves_the_line():
    gate = FairGate(1)
    assert gate.acquire(timeout=0.01)
    assert gate.acquire(timeout=0.05) is False  # the pool's "no free connection within wait_s"
    assert not gate.waiters and gate.free == 0
    gate.release()
    assert gate.acquire(timeout=0.01) and gate.free == 0


def test_the_db_pool_hands_connections_over_in_arrival_order(monkeypatch):
    """shared.db's pool under gevent: a connection released while others wait goes to the oldest."""
    import shared.db as db

    monkeypatch.setattr(db, "green", lambda: True)
    pool = db.LazyConnection(lambda: None, size=1)
    assert isinstance(pool._slots, FairGate)
    order = []

    def borrower(name):
        assert pool._slots.acquire(timeout=5)
        order.append(name)
        gevent.sleep(0)
        pool._slots.release()

    assert pool._slots.acquire()
    waiting = [gevent.spawn(borrower, n) for n in ("a", "b")]
    gevent.sleep(0)
    pool._slots.release()
    late = gevent.spawn(borrower, "late")
    gevent.joinall(waiting + [late], timeout=5, raise_error=True)
    assert order == ["a", "b", "late"]


def test_a_worker_accepts_a_batch_a_turn_only_while_connections_queue_up():
    """deploy.gevent_worker: gunicorn's max_accept = 1 (several workers share new connections)
    holds while few connections wait in the accept queue; with QUEUED_BATCH_AT or more
    waiting, a turn accepts a batch, so a burst of connects does not overflow the queue.
    A single worker (no max_accept from gunicorn) keeps gevent's default."""
    import ast
    import socket as stdlib_socket
    import time

    from deploy import gevent_worker
    from deploy.stack import ROOT

    listener = stdlib_socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    server = gevent_worker.BatchAcceptServer(listener, handle=lambda sock, addr: None)
    assert server.max_accept == 100  # one worker: gunicorn leaves gevent's default, and so does this
    server.max_accept = 1  # what gunicorn's GeventWorker.run() sets with more than one worker
    assert server.max_accept == 1
    def queued(n):  # the kernel completes the handshakes on its own: wait until all n are queued
        deadline = time.monotonic() + 5
        while gevent_worker.accept_queue(listener) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        return gevent_worker.accept_queue(listener)

    clients = [stdlib_socket.create_connection(listener.getsockname())
               for _ in range(gevent_worker.QUEUED_BATCH_AT - 1)]  # handshakes done, none accepted yet
    assert queued(len(clients)) == len(clients) and server.max_accept == 1
    clients.append(stdlib_socket.create_connection(listener.getsockname()))
    assert queued(len(clients)) == len(clients) and server.max_accept == gevent_worker.ACCEPT_BATCH > 1
    for _ in range(len(clients)):
        listener.accept()[0].close()
    assert gevent_worker.accept_queue(listener) == 0 and server.max_accept == 1
    for client in clients:
        client.close()
    listener.close()
    # The API's gunicorn settings use it (read, not run: the file monkey-patches the process).
    tree = ast.parse((ROOT / "deploy" / "gunicorn.conf.py").read_text())
    assigned = {node.targets[0].id: node.value for node in tree.body
                if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)}
    assert ast.literal_eval(assigned["worker_class"]) == "deploy.gevent_worker.GeventWorker"
