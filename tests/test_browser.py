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


def test_inpainting_tab_paints_a_mask_and_repaints_only_there(page, tmp_path):
    import io
    import urllib.request

    import numpy as np
    from PIL import Image

    source = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    Image.fromarray(source).save(tmp_path / "input.png")
    page.get_by_role("tab", name="Inpainting").click()
    editor = page.locator("#inpaint-editor")
    editor.locator("input[type=file]").first.set_input_files(str(tmp_path / "input.png"))
    canvas = editor.locator("canvas").last
    canvas.wait_for(state="visible", timeout=30_000)
    page.wait_for_timeout(500)
    box = canvas.bounding_box()
    start_x, start_y = box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.3
    page.mouse.move(start_x, start_y)
    page.mouse.down()
    for step in range(1, 11):  # a diagonal brush stroke
        page.mouse.move(start_x + step * box["width"] * 0.03, start_y + step * box["height"] * 0.03, steps=3)
    page.mouse.up()
    page.locator("#inpaint-prompt textarea").fill("a red heart")
    page.locator("#inpaint-generate").click()
    image = page.locator("#inpaint-gallery img").first
    image.wait_for(state="visible", timeout=60_000)
    with urllib.request.urlopen(image.get_attribute("src")) as response:
        result = np.asarray(Image.open(io.BytesIO(response.read())).convert("RGB"))
    assert result.shape == source.shape
    unchanged = (result == source).all(axis=-1).mean()
    assert 0.2 < unchanged < 0.98, unchanged  # the stroke was repainted, the rest kept exactly
