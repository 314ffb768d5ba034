"""End to end in a real browser: `streamlit run app.py`, train through the UI, classify an uploaded image.

Drives Debian's Chromium (/usr/bin/chromium, installed by scripts/test.sh) with Playwright's Python API;
never downloads a browser. The server runs offline on a tiny generated dataset with random init, and is
killed at the end, or with pytest (`qtl.testing.processes`). A screenshot is saved under test-artifacts/.
"""

from __future__ import annotations

import re

import pytest
from conftest import REPO, make_image_folder

from qtl.testing.served_app import Server, ServerError, chromium_missing, launch_chromium, offline_env

ARTIFACTS = REPO / "test-artifacts"
PREDICTION = re.compile(r"(quantum|linear|finetuned)-resnet18\S+ → (\w+) \((\d+\.\d)%\)")


@pytest.mark.e2e
def test_train_then_classify_in_chromium(tmp_path):
    """Quick start trains quantum, linear and finetuned in the UI; an uploaded val image gets 3 answers."""
    missing = chromium_missing()
    if missing:
        pytest.fail(missing)
    from playwright.sync_api import expect, sync_playwright

    data = make_image_folder(tmp_path / "tiny")
    env = offline_env(
        tmp_path,
        QTL_DATA_DIR=str(data),
        QTL_MODELS_DIR=str(tmp_path / "models"),
        QTL_DEMO="1",  # the hosted-demo setting: a private session area, and 1 epoch per quick-start run
        QTL_DEMO_MAX_EPOCHS="1",
    )
    ARTIFACTS.mkdir(exist_ok=True)
    with Server(env, tmp_path / "streamlit.log") as server:
        try:
            server.wait_healthy()
        except ServerError as exc:
            pytest.fail(str(exc))
        with sync_playwright() as pw:
            browser = launch_chromium(pw)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.set_default_timeout(30_000)
                page.goto(f"{server.url}/", timeout=30_000)
                expect(page.get_by_role("heading", name="Quantum transfer learning explorer")).to_be_visible()

                # ---- train: the one-click quick start (quantum, linear, finetuned)
                page.get_by_role("button", name="Train quantum, linear and finetuned").click()
                expect(page.get_by_text(re.compile(r"Finished: 3 checkpoint\(s\) saved"))).to_be_visible(
                    timeout=180_000
                )
                expect(page.get_by_test_id("stSidebar").get_by_text("finetuned-resnet18")).to_be_visible()

                # ---- classify: upload a val image
                page.get_by_role("link", name="Classify").click()
                expect(page.get_by_role("heading", name="Classify")).to_be_visible()
                image = sorted((data / "val" / "dogs").glob("*.png"))[0]
                page.locator("input[type=file]").first.set_input_files(str(image))
                answers = page.get_by_text(PREDICTION)
                expect(answers.first).to_be_visible(timeout=60_000)
                expect(page.locator("[data-testid=stImage] img").first).to_be_visible()
                expect(page.locator(".vega-embed").first).to_be_visible()
                text = page.get_by_test_id("stMain").inner_text()
                page.screenshot(path=str(ARTIFACTS / "e2e-classify.png"), full_page=True)
            finally:
                browser.close()
    found = {variant: (label, float(p)) for variant, label, p in PREDICTION.findall(text)}
    assert set(found) == {"quantum", "linear", "finetuned"}, text[-2000:]
    for label, p in found.values():
        assert label in ("cats", "dogs") and 50.0 <= p <= 100.0
    assert server.proc.returncode is not None
