"""Custom against generic plans for the popular serving statement: `python -m bench.plans`.

PostgreSQL gives a prepared statement custom plans (planned with its parameters at
every execution) until a generic plan looks no costlier; the array parameters of
`recs_popular` keep it on custom plans, so the API's connections force generic ones
(shared.db.connect_recs). This times `recs_popular` both ways, on two connections, over up to 300 segments of the
configured recommendations DB (needs a refresh), rounds interleaved, and prints the
median microseconds per read (execute and fetch, from Python).
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import time

from shared.db import connect_recs
from shared.settings import load_settings
from shared.store import prepare

QUERY = "EXECUTE recs_popular (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=16)
    args = parser.parse_args(argv)
    settings = load_settings()
    modes = {}
    for mode in ("force_custom_plan", "force_generic_plan"):
        modes[mode] = prepare(connect_recs(settings, application_name="recs-bench-plans")).cursor()
        modes[mode].execute("SET plan_cache_mode = %s", (mode,))  # read at every EXECUTE
    cur = next(iter(modes.values()))
    cur.execute("SELECT DISTINCT geo_id, gender, age_group, category FROM popular_items ORDER BY 1, 2, 3, 4")
    segments = cur.fetchall()
    if not segments:
        raise SystemExit("popular_items is empty: run a refresh first")
    random.Random(1).shuffle(segments)
    # A request's shape: one segment, a price_from, the geo filter, 100 rows, a few liked ids.
    reads = [cur.mogrify(QUERY, ([g], [gender], [age], [cat], 0.001, None, None, 213, [100], [1, 2, 3]))
             for g, gender, age, cat in segments[:300]]
    times = {mode: [] for mode in modes}
    for r in range(args.rounds):
        for mode in (list(modes) if r % 2 else list(modes)[::-1]):
            started = time.perf_counter()
            for sql in reads:
                modes[mode].execute(sql)
                modes[mode].fetchall()
            times[mode].append((time.perf_counter() - started) / len(reads) * 1e6)
    base = statistics.median(times["force_custom_plan"])
    for mode, values in times.items():
        median = statistics.median(values)
        print(f"{mode}: {median:.0f} us per popular read ({median / base:.2f}x custom)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
