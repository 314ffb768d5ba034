"""Concurrent visitors of the served app, each in its own Chromium context (its own Streamlit session).

Used by bench/load_app.py (8 visitors for a minute) and tests/test_load_browser.py (2, briefly). A
visitor, as a person would:

1. opens the Checkpoints page and uploads a checkpoint of its own, `quantum-mine-v<k>.pt`;
2. goes to Classify (through the navigation, so the session stays) and, until time is up, uploads an
   image, waits for every loaded model's prediction, then removes the image;
3. goes back to Checkpoints and reads this session's checkpoint list.

It records each classification's latency (from handing the file to the uploader until every prediction
of that image is on screen) and everything that went wrong: an exception or error box on a page, a
JavaScript error, a timeout, and any sign of another visitor (a model or checkpoint named for one).
Playwright's asyncio API drives all visitors from one thread and one browser.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field

PREDICTION = re.compile(r"^(\S+) → \S+ \(\d+\.\d%\)$", re.M)
MINE = re.compile(r"quantum-mine-v\d+")
TIMEOUT_MS = 120_000
# every prediction line of the named image is on screen (the uploader's chip shows the name at once)
ANSWERED = """([name, n]) => {
  const main = document.querySelector('[data-testid=stMain]');
  if (!main || !main.innerText.includes(name)) return false;
  return main.innerText.split('\\n').filter(l => / → \\S+ \\(\\d+\\.\\d%\\)$/.test(l)).length >= n;
}"""
CLEARED = """() => {
  const main = document.querySelector('[data-testid=stMain]');
  return main && !/ → \\S+ \\(\\d+\\.\\d%\\)$/m.test(main.innerText);
}"""


def upload_name(k: int) -> str:
    return f"quantum-mine-v{k}.pt"


@dataclass
class Visit:
    """What one visitor saw."""

    visitor: int
    latencies: list[float] = field(default_factory=list)  # seconds per classification
    errors: list[str] = field(default_factory=list)
    models: set[str] = field(default_factory=set)  # model labels in its predictions
    checkpoints: list[str] = field(default_factory=list)  # its session area's list, at the end
    classifying_from: float | None = None  # time.monotonic() when its first classification began

    @property
    def foreign(self) -> set[str]:
        """Names of other visitors' uploads that this visitor saw (must be empty)."""
        seen = {m for m in self.models if MINE.fullmatch(m)} | {
            MINE.match(c)[0] for c in self.checkpoints if MINE.match(c)
        }
        return seen - {upload_name(self.visitor).removesuffix(".pt")}


async def _page_errors(page) -> list[str]:
    main = page.get_by_test_id("stMain")
    out = [f"exception: {t[:200]}" for t in await main.get_by_test_id("stException").all_inner_texts()]
    return out + [f"error box: {t[:200]}" for t in await main.get_by_test_id("stAlert").all_inner_texts()]


async def visit(
    browser, url: str, k: int, checkpoint: bytes, images: list[bytes], seconds: float, shipped: set[str]
) -> Visit:
    """Visitor `k`: upload its checkpoint, classify images for `seconds`, list its checkpoints."""
    out = Visit(k)
    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    page = await context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.on("pageerror", lambda exc: out.errors.append(f"javascript: {exc}"))
    expected = shipped | {upload_name(k).removesuffix(".pt")}
    step = "open Checkpoints"
    try:
        await page.goto(f"{url}/checkpoints", timeout=TIMEOUT_MS)
        await page.get_by_role("heading", name="Checkpoints", exact=True).wait_for()
        await page.locator("input[type=file]").first.set_input_files(
            {"name": upload_name(k), "mimeType": "application/octet-stream", "buffer": checkpoint}
        )
        step = "upload a checkpoint"
        await page.get_by_text(f"Stored and loaded {upload_name(k)}").wait_for()
        step = "open Classify"

        await page.get_by_role("link", name="Classify").click()
        await page.get_by_role("heading", name="Classify", exact=True).wait_for()
        out.classifying_from = time.monotonic()
        deadline, i = out.classifying_from + seconds, 0
        while time.monotonic() < deadline:
            i += 1
            name = f"v{k}-{i}.png"
            step = f"classify {name}"
            t0 = time.perf_counter()
            await page.locator("input[type=file]").first.set_input_files(
                {"name": name, "mimeType": "image/png", "buffer": images[(k + i) % len(images)]}
            )
            await page.wait_for_function(ANSWERED, arg=[name, len(expected)], polling=20, timeout=TIMEOUT_MS)
            out.latencies.append(time.perf_counter() - t0)
            text = await page.get_by_test_id("stMain").inner_text()
            out.models |= set(PREDICTION.findall(text))
            out.errors += await _page_errors(page)
            await page.get_by_role("button", name=f"Remove {name}").click()
            await page.wait_for_function(CLEARED, polling=20, timeout=TIMEOUT_MS)
        if out.models != expected:
            out.errors.append(f"predictions came from {sorted(out.models)}, expected {sorted(expected)}")

        step = "list this session's checkpoints"
        await page.get_by_role("link", name="Checkpoints").click()
        await page.get_by_role("heading", name="Checkpoints", exact=True).wait_for()
        boxes = page.get_by_test_id("stSelectbox")  # one per area: shipped, then this session's
        await page.wait_for_function(
            "() => document.querySelectorAll('[data-testid=stSelectbox]').length >= 2", timeout=30_000
        )
        await boxes.nth(1).click()
        out.checkpoints = await page.get_by_role("option").all_inner_texts()
        await page.keyboard.press("Escape")
        if out.checkpoints != [upload_name(k)]:
            out.errors.append(f"this session lists {out.checkpoints}, expected [{upload_name(k)}]")
        out.errors += await _page_errors(page)
    except Exception as exc:  # a timeout or a missing element: the visitor's run ends here
        try:
            shown = " | ".join((await page.get_by_test_id("stMain").inner_text(timeout=5_000)).split("\n"))
        except Exception:
            shown = "?"
        out.errors.append(
            f"{step}: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}; page: {shown[-600:]}"
        )
    finally:
        await context.close()
    return out


async def visit_all(
    url: str, visitors: int, checkpoint: bytes, images: list[bytes], seconds: float, shipped: set[str]
) -> list[Visit]:
    """`visitors` concurrent visits in one headless Chromium (one context each)."""
    from playwright.async_api import async_playwright

    from qtl.testing.served_app import CHROMIUM, CHROMIUM_ARGS

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            return await asyncio.gather(
                *(
                    visit(browser, url, k, checkpoint, images, seconds, shipped)
                    for k in range(1, visitors + 1)
                )
            )
        finally:
            await browser.close()
