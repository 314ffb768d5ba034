"""Concurrent visitors of the served app, each in its own Chromium context (its own Streamlit session).

Used by bench/load_app.py (16 visitors for 5 minutes), bench/app_latency.py (one visitor, many
classifications) and tests/test_load_browser.py (2, briefly). A visitor, as a person would:

1. opens the Checkpoints page by its address and uploads a checkpoint of its own, `quantum-mine-v<k>.pt`;
2. until time is up: on Classify, uploads an image `v<k>-<i>.png`, waits for every loaded model's
   prediction (and heatmap, when they are shown), then removes the image; every few images it browses
   Compare, Circuit and the Overview; once, if asked, it submits a training run on the Train page, at
   the same moment as every other visitor that trains, and when the server takes it waits for it to
   finish (the demo trains one job at a time and refuses the others, naming the running one);
3. goes back to Checkpoints and reads this session's checkpoint list.

It records the seconds of every action (`Visit.actions`: from the click or upload until the page shows
what it was asked for) and everything that went wrong: an exception or error box on a page, a JavaScript
error, a timeout, and any sign of another visitor: a model, heatmap, image or checkpoint that is not its
own. Playwright's asyncio API drives all visitors from one thread and one browser.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field

PREDICTION = re.compile(r"^(\S+) → \S+ \(\d+\.\d%\)$", re.M)
HEATMAP = re.compile(r"^(\S+): \S+ \d+% · (?:grad-cam|saliency)(?: · .*)?$", re.M)  # (· why it is blank)
IMAGE = re.compile(r"\bv(\d+)-\d+\.png\b")
MINE = re.compile(r"quantum-mine-v\d+")
TRAINED = re.compile(r"quantum-\S+-s0-\d{8}-\d{6}(?:-\d{6})?")  # a checkpoint the Train form saved
TIMEOUT_MS = 180_000
# every prediction line (and heatmap caption, which may end with why the map is blank) of the named image
# is on screen; the uploader's chip shows the name at once
ANSWERED = """([name, n, maps]) => {
  const main = document.querySelector('[data-testid=stMain]');
  if (!main || !main.innerText.includes(name)) return false;
  const lines = main.innerText.split('\\n');
  return lines.filter(l => / → \\S+ \\(\\d+\\.\\d%\\)$/.test(l)).length >= n
      && lines.filter(l => / · (grad-cam|saliency)( · .*)?$/.test(l)).length >= maps;
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
    actions: dict[str, list[float]] = field(default_factory=dict)  # action -> seconds, in order
    errors: list[str] = field(default_factory=list)
    models: set[str] = field(default_factory=set)  # model labels in its predictions and heatmaps
    images: set[int] = field(default_factory=set)  # visitor numbers in the image names it was shown
    trained: set[str] = field(default_factory=set)  # checkpoints its own training saved and loaded
    training: list[tuple[str, float, float]] = field(default_factory=list)  # (taken|refused, t0, t1)
    checkpoints: list[str] = field(default_factory=list)  # its session area's list, at the end
    classifying_from: float | None = None  # time.monotonic() when its first classification began

    @property
    def latencies(self) -> list[float]:
        """Seconds per classification."""
        return self.actions.get("classify", [])

    @property
    def foreign(self) -> set[str]:
        """What this visitor saw of other visitors (must be empty): their uploads, images, trainings."""
        mine = upload_name(self.visitor).removesuffix(".pt")
        seen = {m for m in self.models if MINE.fullmatch(m) and m != mine}
        seen |= {c for c in self.checkpoints if MINE.match(c) and not c.startswith(mine)}
        seen |= {f"image of visitor {v}" for v in self.images if v != self.visitor}
        return seen | {m for m in self.models if TRAINED.fullmatch(m) and m not in self.trained}


async def _page_errors(page) -> list[str]:
    main = page.get_by_test_id("stMain")
    out = [f"exception: {t[:200]}" for t in await main.get_by_test_id("stException").all_inner_texts()]
    return out + [
        f"error box: {t[:200]}" for t in await main.get_by_test_id("stAlertContentError").all_inner_texts()
    ]


class _Clock:
    """Times one action of a visit into `visit.actions`."""

    def __init__(self, visit: Visit, action: str) -> None:
        self.visit, self.action = visit, action

    async def __aenter__(self):
        self.t0 = time.perf_counter()
        return self

    async def __aexit__(self, exc_type, *_):
        if exc_type is None:
            self.visit.actions.setdefault(self.action, []).append(time.perf_counter() - self.t0)


async def _open(page, link: str, heading: str) -> None:
    """Go to a page through the navigation (the session stays) and wait for its title."""
    await page.get_by_role("link", name=link, exact=True).click()
    await page.get_by_role("heading", name=heading, exact=True).wait_for()


async def classify(page, out: Visit, name: str, image: bytes, n_models: int, heatmaps: bool) -> None:
    """Upload `image` as `name` on the Classify page, wait for every model's answer (and heatmap), note
    whose models and images were shown, then remove it."""
    async with _Clock(out, "classify"):
        await page.locator("input[type=file]").first.set_input_files(
            {"name": name, "mimeType": "image/png", "buffer": image}
        )
        maps = n_models if heatmaps else 0
        await page.wait_for_function(ANSWERED, arg=[name, n_models, maps], polling=20, timeout=TIMEOUT_MS)
    text = await page.get_by_test_id("stMain").inner_text()
    out.models |= set(PREDICTION.findall(text)) | set(HEATMAP.findall(text))
    out.images |= {int(v) for v in IMAGE.findall(text)}
    out.errors += await _page_errors(page)
    await page.get_by_role("button", name=f"Remove {name}").click()
    await page.wait_for_function(CLEARED, polling=20, timeout=TIMEOUT_MS)


async def browse(page, out: Visit) -> None:
    """Compare (its summary table), Circuit (the drawing) and the Overview, then back to Classify."""
    async with _Clock(out, "compare"):
        await _open(page, "Compare", "Compare")
        await page.get_by_test_id("stDataFrame").first.wait_for()
    async with _Clock(out, "circuit"):
        await _open(page, "Circuit", "Circuit")
        await page.get_by_test_id("stImage").first.wait_for()
    async with _Clock(out, "overview"):
        await _open(page, "Overview", "Quantum transfer learning explorer")
        await page.get_by_text("Quick start").first.wait_for()
    out.errors += await _page_errors(page)
    await _open(page, "Classify", "Classify")


async def train(page, out: Visit, start_line: asyncio.Barrier | None) -> None:
    """Submit the Train form as it stands (together with the other trainers, at `start_line`). Taken:
    wait until it has finished and its checkpoint is loaded. Refused: the refusal must name the job that
    runs (the server trains one job at a time)."""
    await _open(page, "Train", "Train")
    if start_line is not None:
        try:
            await asyncio.wait_for(start_line.wait(), TIMEOUT_MS / 1e3)
        except (TimeoutError, asyncio.BrokenBarrierError):  # a trainer failed on the way: go anyway
            await start_line.abort()
    t0 = time.monotonic()
    await page.get_by_role("button", name="Train", exact=True).click()
    refused = page.get_by_text("Training request refused")
    started = page.get_by_text(re.compile(r"^train quantum: (running|queued)"))
    await refused.or_(started).or_(page.get_by_text(re.compile(r"Finished: "))).first.wait_for()
    if await refused.count():
        out.training.append(("refused", t0, time.monotonic()))
        why = await refused.first.inner_text()
        if "a job is already running ('train quantum')" not in why:
            out.errors.append(f"a refusal that names no running training: {why[:200]}")
    else:
        async with _Clock(out, "train"):
            await page.get_by_text(re.compile(r"Finished: 1 checkpoint")).first.wait_for(timeout=TIMEOUT_MS)
            await page.get_by_test_id("stSidebar").get_by_text(TRAINED).first.wait_for()  # loaded, rerun
        out.training.append(("taken", t0, time.monotonic()))
        sidebar = await page.get_by_test_id("stSidebar").inner_text()
        out.trained |= set(TRAINED.findall(sidebar))
    out.errors += await _page_errors(page)
    await _open(page, "Classify", "Classify")


async def visit(
    browser,
    url: str,
    k: int,
    checkpoint: bytes,
    images: list[bytes],
    seconds: float,
    shipped: set[str],
    *,
    heatmaps: bool = True,
    browse_every: int = 0,
    train_after: int | None = None,
    start_line: asyncio.Barrier | None = None,
) -> Visit:
    """Visitor `k`: upload its checkpoint, classify images for `seconds` (browsing the other pages every
    `browse_every` images, submitting one training after `train_after` images, when every visitor that
    trains is there: `start_line`), list its checkpoints."""
    out = Visit(k)
    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    page = await context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.on("pageerror", lambda exc: out.errors.append(f"javascript: {exc}"))
    step = "open Checkpoints"
    try:
        async with _Clock(out, "open"):
            await page.goto(f"{url}/checkpoints", timeout=TIMEOUT_MS)
            await page.get_by_role("heading", name="Checkpoints", exact=True).wait_for()
        step = "upload a checkpoint"
        async with _Clock(out, "upload checkpoint"):
            await page.locator("input[type=file]").first.set_input_files(
                {"name": upload_name(k), "mimeType": "application/octet-stream", "buffer": checkpoint}
            )
            await page.get_by_text(f"Stored and loaded {upload_name(k)}").wait_for()
        step = "open Classify"
        await _open(page, "Classify", "Classify")
        out.classifying_from = time.monotonic()
        deadline, i = out.classifying_from + seconds, 0
        while time.monotonic() < deadline:
            i += 1
            name = f"v{k}-{i}.png"
            step = f"classify {name}"
            n_models = len(shipped) + 1 + len(out.trained)
            await classify(page, out, name, images[(k + i) % len(images)], n_models, heatmaps)
            if train_after is not None and i == train_after:
                step = "train"
                await train(page, out, start_line)
            if browse_every and i % browse_every == 0:
                step = "browse"
                await browse(page, out)
        mine = shipped | {upload_name(k).removesuffix(".pt")}
        if not mine <= out.models <= mine | out.trained:  # its trained model shows once it has classified
            out.errors.append(
                f"models shown were {sorted(out.models)}, expected {sorted(mine | out.trained)}"
            )

        step = "list this session's checkpoints"
        await _open(page, "Checkpoints", "Checkpoints")
        boxes = page.get_by_test_id("stSelectbox")  # one per area: shipped, then this session's
        await page.wait_for_function(
            "() => document.querySelectorAll('[data-testid=stSelectbox]').length >= 2", timeout=30_000
        )
        await boxes.nth(1).click()
        out.checkpoints = await page.get_by_role("option").all_inner_texts()
        await page.keyboard.press("Escape")
        own = [upload_name(k), *sorted(f"{t}.pt" for t in out.trained)]
        if sorted(out.checkpoints) != sorted(own):
            out.errors.append(f"this session lists {out.checkpoints}, expected {own}")
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
    url: str,
    visitors: int,
    checkpoint: bytes,
    images: list[bytes],
    seconds: float,
    shipped: set[str],
    **options,
) -> list[Visit]:
    """`visitors` concurrent visits in one headless Chromium (one context each); `options` go to `visit`
    (`train_after` as a {visitor: images} dict: who submits a training, and when)."""
    from playwright.async_api import async_playwright

    from qtl.testing.served_app import CHROMIUM, CHROMIUM_ARGS

    trainers = options.pop("train_after", {}) or {}
    start_line = asyncio.Barrier(len(trainers)) if trainers else None  # they submit at the same moment
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            return await asyncio.gather(
                *(
                    visit(browser, url, k, checkpoint, images, seconds, shipped, train_after=trainers.get(k),
                          start_line=start_line, **options)
                    for k in range(1, visitors + 1)
                )
            )  # fmt: skip
        finally:
            await browser.close()
