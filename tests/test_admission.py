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
