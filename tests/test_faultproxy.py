"""deploy.faultproxy against a real TCP echo server: forwards, freezes (holds everything), thaws, stops."""
import socket
import threading

import pytest

from deploy.faultproxy import FaultProxy


@pytest.fixture
def echo():
    server = socket.create_server(("127.0.0.1", 0))

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return

            def pump(c=conn):
                with c:
                    while data := c.recv(4096):
                        c.sendall(data)

            threading.Thread(target=pump, daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()[1]
    server.close()


def test_freeze_holds_old_and_new_connections_and_thaw_delivers(echo):
    proxy = FaultProxy("127.0.0.1", echo).start()
    try:
        old = socket.create_connection(("127.0.0.1", proxy.port), timeout=0.5)
        old.sendall(b"ping")
        assert old.recv(16) == b"ping"
        proxy.freeze()
        assert proxy.frozen
        old.sendall(b"held")
        new = socket.create_connection(("127.0.0.1", proxy.port), timeout=0.5)  # accepted, like a stopped server
        new.sendall(b"later")
        for s in (old, new):
            with pytest.raises(socket.timeout):
                s.recv(16)
        proxy.thaw()
        assert old.recv(16) == b"held" and new.recv(16) == b"later"
    finally:
        proxy.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", proxy.port), timeout=0.5)
