"""A real browser (Debian's Chromium, headless, driven by Playwright) generates on the color-guided and inpainting
tabs.

The browser waits only for the page: the `warm_server` fixture loads the models these tests use and runs them once
through the API first, because the first load of a Stable Diffusion checkpoint in a process (transformers' key
mapping tables, the 49408-token CLIP tokenizer) and the first forward passes took 10-30 s of the 60 s wait on a busy
2-core machine. The tests also set a few steps in the Steps box, which checks that the box reaches the endpoint.
"""

import io
import json
import os
import shutil
import urllib.request

import numpy as np
import pytest
from PIL import Image

from pipelines.outputs import METADATA_KEY

CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
STEPS = 4


@pytest.fixture(scope="module")
def warm_server(server, tmp_path_factory):
    """The app with the color-guided default model and the inpainting checkpoint loaded and run once."""
    from gradio_client import Client, handle_file

    folder = tmp_path_factory.mktemp("warm-up")
    Image.new("RGB", (64, 64), "white").save(folder / "image.png")
    Image.new("L", (64, 64), 255).save(folder / "mask.png")
    client = Client(server, verbose=False)
    client.predict(steps=1, seed=0, api_name="/color_guided")
    image, mask = handle_file(str(folder / "image.png")), handle_file(str(folder / "mask.png"))
    client.predict(image=image, mask=mask, prompt="warm-up", steps=1, seed=0, api_name="/inpaint")
    return server


@pytest.fixture(scope="module")
def page(warm_server):
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"Chromium not found at {CHROMIUM}; install it with `apt-get install -y chromium`")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1400})
        page.goto(warm_server)
        page.get_by_text("Running on").first.wait_for(timeout=30_000)  # the page has loaded and called the server
        yield page
        browser.close()


def set_steps(page, prefix: str, steps: int) -> None:
    """Type `steps` into a tab's Steps box and check the slider took it."""
    box = page.locator(f"#{prefix}-steps input[data-testid=number-input]")
    box.fill(str(steps))
    box.press("Enter")
    assert page.locator(f"#{prefix}-steps input[type=range]").input_value() == str(steps)


def download(image) -> tuple[np.ndarray, dict]:
    """The pixels and the PNG parameters of a gallery image."""
    with urllib.request.urlopen(image.get_attribute("src")) as response:
        png = Image.open(io.BytesIO(response.read()))
    return np.asarray(png.convert("RGB")), json.loads(png.text[METADATA_KEY])


def test_color_guided_tab_generates_an_image(page, tmp_path):
    page.get_by_role("tab", name="Color-guided").click()
    set_steps(page, "color", STEPS)
    page.locator("#color-generate").click()
    image = page.locator("#color-gallery img").first
    image.wait_for(state="visible", timeout=60_000)
    page.screenshot(path=str(tmp_path / "color-tab.png"), full_page=True)
    _, parameters = download(image)
    assert parameters["steps"] == STEPS and parameters["color"] == "#ff8800"
    page.get_by_text('"color_scale"').first.wait_for(timeout=10_000)


def test_inpainting_tab_paints_a_mask_and_repaints_only_there(page, tmp_path):
    source = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    Image.fromarray(source).save(tmp_path / "input.png")
    page.get_by_role("tab", name="Inpainting").click()
    set_steps(page, "inpaint", STEPS)
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
        page.mouse.move(start_x + step * box["width"] * 0.03, start_y + step * box["height"] * 0.03)
    page.mouse.up()
    page.locator("#inpaint-prompt textarea").fill("a red heart")
    page.locator("#inpaint-generate").click()
    image = page.locator("#inpaint-gallery img").first
    image.wait_for(state="visible", timeout=60_000)
    result, parameters = download(image)
    assert parameters["steps"] == STEPS and parameters["prompt"] == "a red heart"
    assert result.shape == source.shape
    unchanged = (result == source).all(axis=-1).mean()
    assert 0.2 < unchanged < 0.98, unchanged  # the stroke was repainted, the rest kept exactly
