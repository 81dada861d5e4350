"""Load an HTML file in headless Chromium (Playwright, pointed at Debian's /usr/bin/chromium).

`load_page(path, screenshot)` returns what a person's browser saw: the natural widths of every
image, console messages, page errors, every request made, the text of every table cell, and the
words in table cells that the layout split over two lines (a header broken mid-word, say).
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


# Words of visible table cells (running-text cells aside) whose letters lie on more than one line.
BROKEN_WORDS_JS = """() => {
  const broken = [];
  for (const cell of document.querySelectorAll('th, td:not(.text)')) {
    const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      for (const m of node.data.matchAll(/\\S+/g)) {
        const range = document.createRange();
        range.setStart(node, m.index);
        range.setEnd(node, m.index + m[0].length);
        const tops = new Set(Array.from(range.getClientRects()).map(r => Math.round(r.top)));
        if (tops.size > 1) broken.push(m[0]);
      }
    }
  }
  return broken;
}"""


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
            broken = page.evaluate(BROKEN_WORDS_JS)
            if screenshot is not None:
                Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return {"image_widths": widths, "console": console, "errors": errors, "requests": requests, "cells": cells,
            "broken_words": broken}
