"""Debian's chromium driven by playwright, for the dashboard's browser test and its screenshot.

Playwright's own browser download (`playwright install`) is never used: deploy hosts
and CI install `chromium` with apt (deploy/ensure-tools.sh), and playwright drives that
binary over CDP.

  python -m deploy.browser screenshot URL OUT.png [--user ID]   a screenshot of /dashboard
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from contextlib import contextmanager

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]


def available() -> bool:
    return bool(shutil.which(CHROMIUM))


@contextmanager
def page(width: int = 1400, height: int = 1100):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            user, password = os.environ.get("BASIC_AUTH_USERNAME"), os.environ.get("BASIC_AUTH_PASSWORD")
            credentials = {"username": user, "password": password} if user and password else None
            context = browser.new_context(viewport={"width": width, "height": height}, http_credentials=credentials)
            yield context.new_page()
        finally:
            browser.close()


def load_dashboard(p, url: str, timeout_ms: int = 30000) -> float:
    """Open url/dashboard and wait until every panel is drawn; returns ms from navigation start."""
    p.goto(url.rstrip("/") + "/dashboard")
    p.wait_for_function("document.body.dataset.drawn !== undefined", timeout=timeout_ms)
    if p.evaluate("document.body.dataset.drawn") != "1":
        raise RuntimeError("dashboard failed to draw: " + p.inner_text("#generated"))
    return p.evaluate("window.dashboardDrawnMs")


def preview_user(p, user_id: int, timeout_ms: int = 30000) -> None:
    p.fill("#user-id", str(user_id))
    p.click("#user-form button")
    p.wait_for_selector("#preview .body[data-state=done]", timeout=timeout_ms)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.browser")
    sub = parser.add_subparsers(dest="command", required=True)
    shot = sub.add_parser("screenshot", help="a full-page screenshot of a running service's /dashboard")
    shot.add_argument("url", help="the service, e.g. http://localhost:8001")
    shot.add_argument("out", help="PNG file to write")
    shot.add_argument("--user", type=int, help="also show this user's preview")
    args = parser.parse_args(argv)
    with page() as p:
        ms = load_dashboard(p, args.url)
        if args.user:
            preview_user(p, args.user)
        p.screenshot(path=args.out, full_page=True)
    print(f"wrote {args.out} (dashboard drawn in {ms:.0f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
