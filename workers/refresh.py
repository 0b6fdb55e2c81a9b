"""`python -m workers.refresh`: run recs.refresh_all in-process with progress output."""
from __future__ import annotations

import argparse
import json
import logging
import sys

import psycopg2
from tqdm import tqdm

from shared.cache import Cache, make_client
from shared.settings import SettingsError, load_settings
from workers import pipeline

ALREADY_RUNNING = 3  # exit status when another refresh holds the lock


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Run the full precompute once, in this process.")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"settings error: {exc}", file=sys.stderr)
        return 2
    cache = Cache(make_client(settings.recommendations_redis_url, timeout_s=30))
    bar = tqdm(unit="rows", desc="refresh", file=sys.stderr)

    def progress(table, n):
        bar.set_postfix_str(table)
        bar.update(n)

    try:
        result = pipeline.refresh_all(settings, cache, progress=progress,
                                      on_step=lambda name: bar.set_description(f"refresh {name}"))
    except pipeline.AlreadyRunning:
        print("refresh: already running (another refresh holds the lock)", file=sys.stderr)
        return ALREADY_RUNNING
    except psycopg2.Error as exc:
        print(f"refresh: database error: {exc}", file=sys.stderr)
        return 1
    finally:
        bar.close()
    if args.json:
        print(json.dumps(result, default=str))
    else:
        steps = " ".join(f"{k}_s={v['seconds']}" for k, v in result.items() if isinstance(v, dict))
        print(f"refresh: status=success rows={result['rows']} read_s={result['read_s']} {steps} "
              f"total_s={result['seconds']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
