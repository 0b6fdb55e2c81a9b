"""Hold idle and slow-body connections open against a server (run in its own process).

    python -m bench.chaos.holders PORT IDLE SLOW SECONDS

IDLE sockets connect and send nothing. SLOW sockets send a POST /popular head that
announces a 4 KiB body, then one byte a second, so the body never completes while
held. Prints `READY {...}` once every socket has tried to connect, then, after
SECONDS, `DONE {...}`: how many connected, how many the server closed or answered
early, and with which status.
"""
from __future__ import annotations

import asyncio
import json
import sys
import time

SLOW_HEAD = (b"POST /popular HTTP/1.1\r\nHost: chaos\r\nContent-Type: application/json\r\n"
             b"Content-Length: 4096\r\n\r\n{")


class Tally:
    def __init__(self):
        self.connected = 0
        self.connect_failed = 0
        self.closed_early = 0  # the server closed or answered before we let go
        self.responses: dict[str, int] = {}
        self.closed_after_s: list[float] = []


async def hold(port: int, slow: bool, tally: Tally, stop: asyncio.Event, opened: asyncio.Queue) -> None:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 30)
    except (OSError, asyncio.TimeoutError):
        tally.connect_failed += 1
        await opened.put(False)
        return
    tally.connected += 1
    await opened.put(True)
    started = time.monotonic()

    async def trickle():
        writer.write(SLOW_HEAD)
        while not stop.is_set():
            await asyncio.sleep(1)
            writer.write(b" ")
            await writer.drain()

    feeder = asyncio.create_task(trickle()) if slow else None
    reading = asyncio.create_task(reader.read(4096))
    stopping = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait({reading, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if reading in done and not stop.is_set():
            data = reading.result() if not reading.exception() else b""
            tally.closed_early += 1
            tally.closed_after_s.append(round(time.monotonic() - started, 2))
            status = data.split(b" ", 2)[1].decode(errors="replace") if data.startswith(b"HTTP/") else "closed"
            tally.responses[status] = tally.responses.get(status, 0) + 1
    except OSError:
        tally.closed_early += 1
    finally:
        for task in (feeder, reading, stopping):
            if task:
                task.cancel()
        writer.close()


async def main(port: int, idle: int, slow: int, seconds: float) -> None:
    stop = asyncio.Event()
    opened: asyncio.Queue = asyncio.Queue()
    tallies = {"idle": Tally(), "slow": Tally()}
    tasks = [asyncio.create_task(hold(port, False, tallies["idle"], stop, opened)) for _ in range(idle)]
    tasks += [asyncio.create_task(hold(port, True, tallies["slow"], stop, opened)) for _ in range(slow)]
    for _ in range(idle + slow):
        await opened.get()
    print("READY " + json.dumps({k: t.connected for k, t in tallies.items()}), flush=True)
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    print("DONE " + json.dumps({k: vars(t) for k, t in tallies.items()}), flush=True)


if __name__ == "__main__":
    port, idle, slow, seconds = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    asyncio.run(main(port, idle, slow, seconds))
