"""A pausable TCP proxy for fault tests: freeze a dependency without touching its server.

    proxy = FaultProxy("127.0.0.1", 5432).start()   # listens on 127.0.0.1:proxy.port
    proxy.freeze()   # like SIGSTOP of the server: connections are accepted and held,
                     # bytes already in flight and new ones are kept, nothing is forwarded
    proxy.thaw()     # forwarding resumes, held bytes included
    proxy.stop()     # closes the listener and every connection

It runs an asyncio loop in one daemon thread, so tests, the chaos driver and a
shell (`python -m deploy.faultproxy HOST PORT [LISTEN_PORT]`) can use it alike.
"""
from __future__ import annotations

import asyncio
import threading

CHUNK = 64 * 1024


class FaultProxy:
    def __init__(self, target_host: str, target_port: int, listen_port: int = 0, listen_host: str = "127.0.0.1"):
        self.target = (target_host, int(target_port))
        self.listen = (listen_host, int(listen_port))
        self.port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._flowing: asyncio.Event | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    # -- control, from any thread ---------------------------------------------------------
    def start(self) -> "FaultProxy":
        ready = threading.Event()
        failure: list[BaseException] = []

        def run():
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._listen())
            except BaseException as exc:  # report a bind failure to start()
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name=f"faultproxy-{self.target[1]}", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            raise failure[0]
        return self

    def freeze(self) -> None:
        self._call(self._flowing.clear)

    def thaw(self) -> None:
        self._call(self._flowing.set)

    @property
    def frozen(self) -> bool:
        return self._flowing is not None and not self._flowing.is_set()

    def stop(self) -> None:
        if self._loop is None or self._loop.is_closed():
            return
        fut = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
        try:
            fut.result(10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _call(self, fn) -> None:
        done = threading.Event()

        def wrapped():
            fn()
            done.set()

        self._loop.call_soon_threadsafe(wrapped)
        done.wait(5)

    # -- inside the loop ------------------------------------------------------------------
    async def _listen(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._client, *self.listen, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        up_writer = None
        try:
            await self._flowing.wait()  # frozen: the client is accepted, and waits like on a stopped server
            up_reader, up_writer = await asyncio.open_connection(*self.target)
            self._writers.add(up_writer)
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # a reset, a refused upstream, or stop(): the connection just ends
        finally:
            for w in (writer, up_writer):
                if w is not None:
                    self._writers.discard(w)
                    w.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await reader.read(CHUNK)
                await self._flowing.wait()  # a frozen proxy holds what it read
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        finally:
            try:
                if writer.can_write_eof():
                    writer.write_eof()
            except OSError:
                pass

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            w.close()
        self._writers.clear()
        self._flowing.set()  # let parked tasks see their closed sockets and finish
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _main() -> None:
    import argparse
    import signal

    parser = argparse.ArgumentParser(description="Pausable TCP proxy: SIGUSR1 freezes, SIGUSR2 thaws.")
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("listen_port", type=int, nargs="?", default=0)
    args = parser.parse_args()
    proxy = FaultProxy(args.host, args.port, args.listen_port).start()
    signal.signal(signal.SIGUSR1, lambda *_: proxy.freeze())
    signal.signal(signal.SIGUSR2, lambda *_: proxy.thaw())
    print(f"faultproxy listening on 127.0.0.1:{proxy.port} -> {args.host}:{args.port}", flush=True)
    try:
        while True:
            signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        proxy.stop()


if __name__ == "__main__":
    _main()
