"""The live sync's names and its lag, shared by the workers (which run it) and the API (which reports it).

The sync itself is workers/live.py; the live state in Redis is shared/cache.py.
"""
from __future__ import annotations

LIVE_SYNC_TASK = "recs.sync_recent_activity"
LIVE_QUEUE = "recs_live"  # its own queue and worker, so a long full job never delays it

SYNC_STATUS_SQL = """
SELECT max(synced_at), extract(epoch FROM now() - max(synced_at)),
       max(newest_event_at), extract(epoch FROM now() - max(newest_event_at)), bool_and(caught_up)
FROM live_sync_state WHERE source IN ('likes', 'clicks')
"""


def sync_status(cur, settings) -> dict:
    """The sync's lag for /health and /stats.

    lag_s: how far behind the main DB what we serve may be. When the last run caught
    up, that is the time since it finished; when it stopped with events left (a
    burst), it is the age of the newest event it applied. `behind` when lag_s exceeds
    LIVE_LAG_ALERT_SECONDS; a sync that never ran reports status "never_run".
    """
    cur.execute(SYNC_STATUS_SQL)
    synced_at, since_sync, newest_at, newest_age, caught_up = cur.fetchone()
    alert = settings.live_lag_alert_seconds
    if synced_at is None:
        return {"status": "never_run", "behind": False, "alert_s": alert, "interval_s": settings.live_sync_seconds}
    lag = float(since_sync) if caught_up or newest_age is None else float(newest_age)
    return {
        "status": "behind" if lag > alert else "ok",
        "behind": lag > alert,
        "lag_s": round(lag, 1),
        "last_sync": synced_at,
        "since_last_sync_s": round(float(since_sync), 1),
        "newest_event_at": newest_at,
        "newest_event_age_s": None if newest_age is None else round(float(newest_age), 1),
        "caught_up": bool(caught_up),
        "alert_s": alert,
        "interval_s": settings.live_sync_seconds,
    }
