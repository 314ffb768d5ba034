"""Every page's main path in a real browser, each opened by its own address (a deep link) in a fresh
session, on a server whose first request is itself a deep link: offline, no ImageNet weights, the
shipped checkpoints autoloaded, a tiny ants/bees dataset. The browser must never reach past the server
(the favicon used to come from Google Fonts), and no page may show an exception or an error box.

Also: the sidebar's training progress follows the job as the page's own panel does (it used to stay at
the step of the page's last full run).

Drives Debian's Chromium through Playwright (never downloads a browser); the server is killed at the end.
"""

from __future__ import annotations

import re
import shutil
import time
from urllib.parse import urlparse

import pytest
from conftest import REPO, make_image_folder

from qtl.testing.served_app import Server, ServerError, chromium_missing, launch_chromium, offline_env

ARTIFACTS = REPO / "test-artifacts"
N_SHIPPED = 5
ANSWER = re.compile(r"^\S+ → (ants|bees) \(\d+\.\d%\)$", re.M)
HEATMAP = re.compile(r"^\S+: (ants|bees) \d+% · grad-cam$", re.M)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A local-mode server (its own copy of the shipped checkpoints, a tiny dataset), offline."""
    missing = chromium_missing()
    if missing:
        pytest.fail(missing)
    tmp = tmp_path_factory.mktemp("browser")
    models = tmp / "models"
    models.mkdir()
    for p in (REPO / "models").iterdir():
        if p.suffix == ".pt" or p.name == "SHIPPED":
            shutil.copy(p, models / p.name)
    data = make_image_folder(tmp / "ants_bees", classes=("ants", "bees"), per_split=(4, 3), size=(96, 80))
    env = offline_env(tmp, QTL_PRETRAINED="1", QTL_DATA_DIR=str(data), QTL_MODELS_DIR=str(models))
    with Server(env, tmp / "streamlit.log") as server:
        try:
            server.wait_healthy()
        except ServerError as exc:
            pytest.fail(str(exc))
        yield server, data
        log = server.log_tail(50_000)
    assert "Traceback" not in log, log[-3000:]


def main_text(page) -> str:
    return page.get_by_test_id("stMain").inner_text()


def assert_clean(page, what: str) -> None:
    """No exception and no error box on the page."""
    main = page.get_by_test_id("stMain")
    exceptions = main.get_by_test_id("stException").all_inner_texts()
    errors = main.get_by_test_id("stAlertContentError").all_inner_texts()
    assert not exceptions and not errors, (what, exceptions, errors)


def overview(page, data) -> None:
    page.get_by_text("Dataset found").wait_for()
    page.get_by_text("Using the bundled pretrained backbone").wait_for()
    page.get_by_role("button", name="Train quantum, linear and finetuned").wait_for()


def data_page(page, data) -> None:
    page.get_by_text("ants_bees (built-in default)").first.wait_for()
    page.get_by_test_id("stMetric").filter(has_text="images").get_by_text("14").wait_for()


def train(page, data) -> None:
    """The form's default run (quantum, 3 epochs) trains, saves and loads a checkpoint."""
    page.get_by_role("button", name="Train", exact=True).click()
    page.get_by_text(re.compile(r"^Finished: 1 checkpoint\(s\) saved")).wait_for(timeout=180_000)


def checkpoints(page, data) -> None:
    table = page.get_by_test_id("stDataFrame").first
    table.wait_for()
    page.get_by_role("button", name="Load").or_(page.get_by_role("button", name="Unload")).first.wait_for()


def circuit(page, data) -> None:
    page.get_by_test_id("stImage").first.wait_for()  # the drawn circuit
    page.get_by_text("quantum parameters").wait_for()


def classify(page, data) -> None:
    """An uploaded image: every shipped model answers and shows its heatmap."""
    image = sorted((data / "val" / "bees").glob("*.png"))[0]
    page.locator("input[type=file]").first.set_input_files(str(image))
    page.wait_for_function(
        """(n) => { const t = document.querySelector('[data-testid=stMain]').innerText.split('\\n');
           return t.filter(l => / → (ants|bees) \\(/.test(l)).length >= n
               && t.filter(l => / · grad-cam$/.test(l)).length >= n; }""",
        arg=N_SHIPPED,
        timeout=120_000,
    )
    text = main_text(page)
    assert len(ANSWER.findall(text)) >= N_SHIPPED and len(HEATMAP.findall(text)) >= N_SHIPPED, text[-2000:]


def compare(page, data) -> None:
    page.get_by_text("Runs that differ only in their seed").wait_for()
    page.get_by_test_id("stDataFrame").first.wait_for()


def noise(page, data) -> None:
    page.get_by_test_id("stMetric").filter(has_text="val accuracy").first.wait_for(timeout=120_000)
    page.get_by_text("Accuracy against depolarizing strength").wait_for(timeout=120_000)


def hardware(page, data) -> None:
    """A shipped quantum checkpoint compiled for a fake IBM backend: the job's estimate shows."""
    page.get_by_text(re.compile(r"^Estimate:")).wait_for(timeout=120_000)
    page.get_by_role("button", name="Run on FakeManilaV2").wait_for()


def experiments(page, data) -> None:
    page.get_by_text(re.compile(r"finished runs")).first.wait_for()  # a shipped study, offline
    page.locator(".vega-embed:visible").first.wait_for()


def diff_lab(page, data) -> None:
    page.get_by_role("button", name="Run").click()
    page.get_by_test_id("stDataFrame").first.wait_for(timeout=180_000)


PAGES = {  # address -> (title, main path)
    "": ("Quantum transfer learning explorer", overview),
    "data": ("Data", data_page),
    "train": ("Train", train),
    "checkpoints": ("Checkpoints", checkpoints),
    "circuit": ("Circuit", circuit),
    "classify": ("Classify", classify),
    "compare": ("Compare", compare),
    "noise": ("Noise", noise),
    "hardware": ("Hardware", hardware),
    "experiments": ("Experiments", experiments),
    "diff_lab": ("Differentiation lab", diff_lab),
}


@pytest.mark.e2e
@pytest.mark.slow
def test_every_page_by_its_address(served):
    """Each page opened by its address in a fresh session (the first request of all a deep link) does its
    main job with no exception or error box, and nothing is fetched from beyond the server."""
    from playwright.sync_api import sync_playwright

    server, data = served
    ARTIFACTS.mkdir(exist_ok=True)
    hosts = set()
    with sync_playwright() as pw:
        browser = launch_chromium(pw)
        try:
            for address, (title, main_path) in [("classify", PAGES["classify"]), *PAGES.items()]:
                context = browser.new_context(viewport={"width": 1400, "height": 1000})
                context.on("request", lambda r: hosts.add(urlparse(r.url).hostname))
                page = context.new_page()
                page.set_default_timeout(60_000)
                errors = []
                page.on("pageerror", lambda exc, errors=errors: errors.append(str(exc)))
                page.goto(f"{server.url}/{address}")
                page.get_by_role("heading", name=title, exact=True).wait_for()
                try:
                    main_path(page, data)
                except Exception:
                    page.screenshot(path=str(ARTIFACTS / f"page-{address or 'overview'}.png"), full_page=True)
                    raise
                assert_clean(page, address)
                assert not errors, (address, errors)
                context.close()
        finally:
            browser.close()
    assert hosts == {"127.0.0.1"}, f"the browser fetched from {sorted(hosts - {'127.0.0.1'})}"


@pytest.mark.e2e
def test_sidebar_progress_follows_the_job(served):
    """While the quick start trains three runs, the sidebar's progress shows the step the page's job
    panel shows (within a poll or two), not the one of the page's last full run."""
    from playwright.sync_api import sync_playwright

    server, _ = served
    with sync_playwright() as pw:
        browser = launch_chromium(pw)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)
            page.goto(server.url)
            page.get_by_role("button", name="Train quantum, linear and finetuned").click()
            main = page.get_by_test_id("stMain").get_by_test_id("stProgress")
            side = page.get_by_test_id("stSidebar").get_by_test_id("stProgress")
            main.wait_for()
            first, seen, deadline = main.inner_text(), [], time.monotonic() + 180
            while time.monotonic() < deadline and main.count() and side.count():
                try:
                    now, shown = main.inner_text(timeout=1_000), side.inner_text(timeout=1_000)
                except Exception:  # the job finished between the two reads
                    break
                seen.append((now, shown.removeprefix("training: ")))
                time.sleep(0.1)
        finally:
            browser.close()
    later = [(m, s) for m, s in seen if m != first]
    assert later, f"the job never moved past {first!r}"
    assert any(m == s for m, s in later), f"the sidebar never followed the job: {later[-5:]}"


@pytest.mark.e2e
def test_sessions_draw_the_circuit_at_once(served):
    """Six sessions open the Circuit page by its address at the same moment, three rounds: each shows
    the drawing and no exception (they used to share one cached matplotlib figure, and two sessions
    drawing it at once broke it: "did not call Figure.draw")."""
    import asyncio

    from playwright.async_api import async_playwright

    from qtl.testing.served_app import CHROMIUM, CHROMIUM_ARGS

    server, _ = served

    async def one(browser, failures: list) -> None:
        context = await browser.new_context(viewport={"width": 1200, "height": 900})
        page = await context.new_page()
        page.set_default_timeout(120_000)
        await page.goto(f"{server.url}/circuit")
        await page.get_by_role("heading", name="Circuit", exact=True).wait_for()
        await page.get_by_text("quantum parameters").wait_for()
        main = page.get_by_test_id("stMain")
        failures += await main.get_by_test_id("stException").all_inner_texts()
        if not await main.get_by_test_id("stImage").count():
            failures.append("no drawing")
        await context.close()

    async def rounds() -> list:
        failures: list = []
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
            )
            try:
                await one(browser, failures)  # the drawing is made and cached: then all show the same one
                for _ in range(3):
                    await asyncio.gather(*(one(browser, failures) for _ in range(6)))
            finally:
                await browser.close()
        return failures

    failures = asyncio.run(rounds())
    assert not failures, [f[:300] for f in failures[:2]]
