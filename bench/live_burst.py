"""The live block's sync throughput on its own: one burst against given databases, no API, no wrk.

    python -m bench.live_burst --main-url postgresql:///copy_main --recs-url postgresql:///copy_recs \
        --redis-url redis://127.0.0.1:6411/1 [--burst 100000]

Run it on copies of a refreshed preset's databases (createdb -T ...): the burst's rows
are deleted from the main DB afterwards, but the profiles and fold-ins the sync wrote
stay in the recommendations DB, so a second run on the same copy folds in nobody.
Prints bench.live.throughput()'s JSON: seconds to absorb the burst, seconds until its
fold-ins are done, and their overlap with the full similarity job.
"""
from __future__ import annotations

import argparse
import json
import logging

from bench.live import MainDB, _reset_sync, throughput
from shared.cache import Cache, make_client
from shared.settings import load_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--main-url", required=True)
    parser.add_argument("--recs-url", required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--burst", type=int, default=100_000)
    parser.add_argument("--overlap-sample", type=int, default=300, help="folded-in users compared (0: skip)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    settings = load_settings({"MAIN_DATABASE_URL": args.main_url, "RECOMMENDATIONS_DATABASE_URL": args.recs_url,
                              "RECOMMENDATIONS_REDIS_URL": args.redis_url})
    cache = Cache(make_client(settings.recommendations_redis_url, timeout_s=30))
    _reset_sync(args.recs_url)
    db = MainDB(args.main_url)
    try:
        print(json.dumps(throughput(settings, cache, db, args.burst, args.overlap_sample)), flush=True)
    finally:
        db.clean()


if __name__ == "__main__":
    main()
