"""Per-process clients of the API: created lazily after gunicorn forks, never at import."""
from __future__ import annotations

from functools import cached_property

from shared.cache import Cache, make_client
from shared.catalogue import Snapshot
from shared.db import API_CONNECT_TIMEOUT_S, LazyConnection, connect_main, connect_recs
from shared.settings import Settings
from shared.store import SqlSource, prepare

REDIS_TIMEOUT_S = 0.25


class Services:
    def __init__(self, settings: Settings):
        self.settings = settings

    @cached_property
    def cache(self) -> Cache:
        return Cache(make_client(self.settings.recommendations_redis_url, timeout_s=REDIS_TIMEOUT_S),
                     generation_check_s=self.settings.generation_check_ms / 1000)

    @cached_property
    def recs_db(self) -> LazyConnection:
        return LazyConnection(lambda: prepare(connect_recs(
            self.settings, statement_timeout_ms=self.settings.db_timeout_ms, application_name="recs-api")))

    @cached_property
    def source(self) -> SqlSource:
        return SqlSource(self.recs_db.run)

    @cached_property
    def snapshot(self) -> Snapshot:
        """The catalogue snapshot and segment lists this process serves misses from."""
        return Snapshot(self.recs_db.run)

    def connect_main(self):
        return connect_main(self.settings, statement_timeout_ms=self.settings.db_timeout_ms,
                            connect_timeout_s=API_CONNECT_TIMEOUT_S)

    @cached_property
    def celery(self):
        # Imported on first admin call only: the serving path stays small.
        from celery import Celery

        return Celery("recs-api", broker=self.settings.celery_broker_url, backend=self.settings.celery_result_backend)
