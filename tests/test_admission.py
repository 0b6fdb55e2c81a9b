"""api.admission.FairGate: requests beyond the active limit are admitted first come, first served."""
import gevent
import pytest

from api.admission import FairGate


def test_waiters_are_admitted_in_arrival_order_and_newcomers_queue_behind_them():
    gate = FairGate(1)
    gate.enter()  # the one running request
    admitted = []

    def request(name):
        gate.enter()
        admitted.append(name)
        gevent.sleep(0)
        gate.leave()

    waiting = [gevent.spawn(request, n) for n in ("first", "second", "third")]
    gevent.sleep(0)  # all three are now waiting
    assert len(gate.waiters) == 3 and gate.free == 0
    gate.leave()  # the slot goes to "first"
    late = gevent.spawn(request, "late")  # arrives after the release: must not jump the line
    gevent.joinall(waiting + [late], timeout=5, raise_error=True)
    assert admitted == ["first", "second", "third", "late"]
    assert gate.free == 1 and not gate.waiters


def test_a_request_whose_deadline_passes_while_waiting_leaves_the_line_and_loses_no_slot():
    gate = FairGate(1)
    gate.enter()
    with pytest.raises(gevent.Timeout):
        with gevent.Timeout(0.05):
            gate.enter()
    assert not gate.waiters
    gate.leave()
    assert gate.free == 1
    gate.enter()  # the slot is still there for the next request
    assert gate.free == 0
