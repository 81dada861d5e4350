"""Load an HTML file in headless Chromium (Playwright, pointed at Debian's /usr/bin/chromium).

`load_page(path, screenshot)` returns what a person's browser saw: the natural widths of every
image, console messages, page errors, every request made, and the text of every table cell.
Tests skip only where chromium or Playwright is absent and this is not CI.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


def require_browser():
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        reason = "playwright is not installed (pip install -e '.[test]')"
    else:
        if CHROMIUM:
            return
        reason = "chromium is not installed (apt-get install -y chromium)"
    if os.environ.get("CI"):
        pytest.fail(f"browser test cannot run in CI: {reason}")
    pytest.skip(reason)


def load_page(path: Path, screenshot: Path | None = None) -> dict:
    from playwright.sync_api import sync_playwright

    console, errors, requests = [], [], []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("console", lambda m: console.append((m.type, m.text)))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(Path(path).resolve().as_uri(), wait_until="load")
            widths = page.evaluate("Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0)")
            cells = page.evaluate("Array.from(document.querySelectorAll('td,th')).map(c => c.textContent.trim())")
            if screenshot is not None:
                Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return {"image_widths": widths, "console": console, "errors": errors, "requests": requests, "cells": cells}
