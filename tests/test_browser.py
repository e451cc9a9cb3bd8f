"""A real browser (Debian's Chromium, headless, driven by Playwright) generates on the color-guided tab."""

import os
import shutil

import pytest

CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def page(server):
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"Chromium not found at {CHROMIUM}; install it with `apt-get install -y chromium`")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1400})
        page.goto(server)
        yield page
        browser.close()


def test_color_guided_tab_generates_an_image(page, tmp_path):
    page.get_by_role("tab", name="Color-guided").click()
    page.locator("#color-generate").click()
    image = page.locator("#color-gallery img").first
    image.wait_for(state="visible", timeout=60_000)
    assert image.get_attribute("src")
    page.screenshot(path=str(tmp_path / "color-tab.png"), full_page=True)
    info = page.get_by_text('"color_scale"')
    info.first.wait_for(timeout=10_000)
