"""Per-process clients of the API: created lazily after gunicorn forks, never at import."""
from __future__ import annotations

from functools import cached_property

from api.health import Snapshot as HealthSnapshot
from api.metrics import STORES_DROPPED, CountedConnection, dependency_error
from shared.cache import Cache, make_client
from shared.catalogue import Snapshot as CatalogueSnapshot
from shared.deadline import green
from shared.db import API_CONNECT_TIMEOUT_S, LazyConnection, connect_main, connect_recs
from shared.settings import Settings
from shared.store import SqlSource, prepare

# Redis connect and socket timeout. Not shorter: the wait includes the worker's own
# queueing for the CPU, and with thousands of connections on two cores a healthy Redis's
# reply can be read 0.3 s or more after it arrived; a timeout there would open the
# breaker and send every request to the database for a second (the 10,000-connection
# chaos case: thousands of 503s). A frozen Redis still costs a request at most this
# plus the DB fallback, within DB_TIMEOUT_MS + 500 ms.
REDIS_TIMEOUT_S = 1.0
# Redis connections per web worker; requests beyond it wait their turn (up to the
# request's deadline) instead of opening more.
REDIS_POOL_SIZE = 32
# /health and /readyz re-check dependencies at most this often per process.
HEALTH_TTL_S = 1.5


class Services:
    def __init__(self, settings: Settings):
        self.settings = settings

    @cached_property
    def cache(self) -> Cache:
        cache = Cache(make_client(self.settings.recommendations_redis_url, timeout_s=REDIS_TIMEOUT_S,
                                  max_connections=REDIS_POOL_SIZE,
                                  pool_wait_s=self.settings.request_timeout_ms / 1000),
                      generation_check_s=self.settings.generation_check_ms / 1000,
                      on_error=dependency_error("redis"))
        if green():  # a miss's store leaves after its response, with other requests' (shared.writebehind)
            cache.send_behind(on_drop=STORES_DROPPED.inc)
        return cache

    @cached_property
    def recs_db(self) -> CountedConnection:
        return CountedConnection(LazyConnection(lambda: prepare(connect_recs(
            self.settings, statement_timeout_ms=self.settings.db_timeout_ms, application_name="recs-api")),
            deadline_s=self.settings.db_timeout_ms / 1000), "recommendations_db")

    @cached_property
    def source(self) -> SqlSource:
        return SqlSource(self.recs_db.run)

    @cached_property
    def snapshot(self) -> CatalogueSnapshot:
        """The catalogue snapshot and segment lists this process serves misses from."""
        return CatalogueSnapshot(self.recs_db.run)

    def connect_main(self):
        return connect_main(self.settings, statement_timeout_ms=self.settings.db_timeout_ms,
                            connect_timeout_s=API_CONNECT_TIMEOUT_S)

    @cached_property
    def health(self) -> HealthSnapshot:
        from api.ops import check_timeout_s, diagnose  # the checks live with the /health view

        return HealthSnapshot(lambda: diagnose(self), ttl_s=HEALTH_TTL_S, wait_s=check_timeout_s(self.settings) + 0.2)

    @cached_property
    def celery(self):
        from api.admin import celery_client

        return celery_client(self.settings)
