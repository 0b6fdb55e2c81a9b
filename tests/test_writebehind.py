"""Stores sent after the request (shared.writebehind), on a real Redis.

The test process is not monkey-patched: the greenlet that sends the stores runs when the
test yields to gevent's hub, and its socket calls block until Redis answers."""
import time

import gevent
import pytest

from deploy.localproc import free_port
from shared.cache import Cache, CacheUnavailable, make_client, user_key
from shared.writebehind import WriteBehind


@pytest.fixture
def redis_url(redis_server):
    url = f"{redis_server.url}/11"
    make_client(url).flushdb()
    yield url
    make_client(url).flushdb()


def settle(cache: Cache, seconds: float = 5.0) -> None:
    """Yield to the hub until the writer has nothing queued or in flight."""
    deadline = time.monotonic() + seconds
    while (cache.writer._queue or cache.writer._draining) and time.monotonic() < deadline:
        gevent.sleep(0.01)
    assert not cache.writer._queue and not cache.writer._draining


def test_stores_leave_after_the_request_many_in_one_round_trip(redis_url):
    cache = Cache(make_client(redis_url))
    cache.store_user(cache.lookup_user(1, 213, "f"), b"[1]", 600)  # sent at once: Redis has the script from now on
    cache.send_behind()
    for n in range(3):
        cache.store_miss(f"recs:pop:0:wb{n}", f"[{n}]".encode(), 900)
    slot = cache.lookup_user(7, 213, "f")
    cache.store_user(slot, b"[9]", 600, row=b"row-7")
    # Nothing was sent while the "request" ran: the stores wait for it to yield.
    assert [cache.client.get(f"recs:pop:0:wb{n}") for n in range(3)] == [None] * 3
    assert not cache.client.exists(user_key(7))
    settle(cache)
    assert [cache.client.get(f"recs:pop:0:wb{n}") for n in range(3)] == [b"[0]", b"[1]", b"[2]"]
    assert 0 < cache.client.ttl("recs:pop:0:wb0") <= 900
    assert cache.lookup_user(7, 213, "f").value == b"[9]" and 0 < cache.client.ttl(user_key(7)) <= 600
    assert cache.lookup_user(7, 213, "other filters").row == b"row-7"  # a miss gets the row
    assert cache.writer.round_trips == 1 and cache.writer.dropped == 0


def test_stores_made_while_one_round_trip_is_in_flight_go_in_the_next(redis_url):
    cache = Cache(make_client(redis_url))
    cache.send_behind()
    cache.store_miss("recs:pop:0:first", b"[1]", 900)
    gevent.sleep(0)  # the writer starts; with a blocking socket it finishes its round trip here
    cache.store_miss("recs:pop:0:second", b"[2]", 900)
    cache.store_miss("recs:pop:0:third", b"[3]", 900)
    settle(cache)
    assert cache.client.mget("recs:pop:0:first", "recs:pop:0:second", "recs:pop:0:third") == [b"[1]", b"[2]", b"[3]"]
    assert cache.writer.round_trips == 2


def test_a_batch_after_redis_lost_its_scripts_is_sent_again_with_them_loaded(redis_url):
    cache = Cache(make_client(redis_url))
    cache.send_behind()
    cache.client.script_flush()  # as after a restart of Redis
    for user in (7, 8):
        cache.store_user(cache.lookup_user(user, 213, "f"), f"[{user}]".encode(), 600)
    settle(cache)
    assert [cache.lookup_user(user, 213, "f").value for user in (7, 8)] == [b"[7]", b"[8]"]
    assert cache.writer.round_trips == 2  # the batch, NOSCRIPT, then again with the script loaded
    cache.store_user(cache.lookup_user(9, 213, "f"), b"[9]", 600)
    cache.store_user(cache.lookup_user(10, 213, "f"), b"[10]", 600)
    settle(cache)
    assert cache.lookup_user(10, 213, "f").value == b"[10]" and cache.writer.round_trips == 3


def test_a_full_queue_drops_new_stores_never_blocks_the_request(redis_url):
    cache = Cache(make_client(redis_url))
    drops = []
    cache.writer = WriteBehind(cache.client, cache._call, limit=2, on_drop=lambda: drops.append(1))
    for n in range(3):
        cache.store_miss(f"recs:pop:0:q{n}", b"[1]", 900)
    assert cache.writer.dropped == 1 and drops == [1]  # the API counts it in /metrics
    settle(cache)
    assert [cache.client.exists(f"recs:pop:0:q{n}") for n in range(3)] == [1, 1, 0]


def test_redis_down_loses_the_stores_and_opens_the_breaker_without_raising():
    cache = Cache(make_client(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.2))
    cache.send_behind()
    cache.store_miss("recs:pop:0:lost", b"[1]", 900)  # the request itself never sees the failure
    settle(cache)
    with pytest.raises(CacheUnavailable, match="recent failure"):
        cache.get("recs:pop:0:lost")  # the breaker the failed round trip opened: no wait


def test_without_a_writer_a_store_is_sent_at_once(redis_url):
    cache = Cache(make_client(redis_url))
    cache.store_miss("recs:pop:0:now", b"[1]", 900)
    assert cache.client.get("recs:pop:0:now") == b"[1]"
