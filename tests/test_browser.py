"""A real browser (Debian's Chromium, headless, driven by Playwright) generates on the color-guided and inpainting
tabs.

Each step waits for what the page shows, never for a fixed time: the image editor ignores a file set before its
canvas exists (about 2 s after its tab first opens, longer on a busy CPU or a cold browser), so the test waits for the
canvas, then for the image to be in the editor; a Generate that ends in an error fails at once with its message
instead of waiting for a gallery that will not come. The `warm_server` fixture loads the models and runs them once
through the API, so the browser does not wait for a first model load (seconds to tens of seconds on a busy CPU).
"""

import io
import json
import os
import re
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


FINAL_CAPTION = re.compile(r"· seed \d+")  # a final image's caption; a preview's reads "preview · step k of n"


def wait_for_result(page, prefix: str):
    """The first final gallery image of a tab after Generate (previews come and go before it); an error toast fails
    the test with its text at once."""
    final = page.locator(f"#{prefix}-gallery").get_by_text(FINAL_CAPTION)
    errors = page.locator(".toast-body.error")  # an earlier test's notice ("Stopped at step ...") is no failure
    final.or_(errors).first.wait_for(state="visible", timeout=60_000)
    assert not errors.count(), errors.first.inner_text()
    image = page.locator(f"#{prefix}-gallery img").first
    image.wait_for(state="visible", timeout=30_000)
    return image


def download(image) -> tuple[np.ndarray, dict]:
    """The pixels and the PNG parameters of a gallery image."""
    with urllib.request.urlopen(image.get_attribute("src")) as response:
        png = Image.open(io.BytesIO(response.read()))
    return np.asarray(png.convert("RGB")), json.loads(png.text[METADATA_KEY])


def test_color_guided_tab_generates_an_image(page, tmp_path):
    page.get_by_role("tab", name="Color-guided").click()
    set_steps(page, "color", STEPS)
    page.locator("#color-generate").click()
    image = wait_for_result(page, "color")
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
    canvas = editor.locator("canvas").last
    canvas.wait_for(state="visible", timeout=30_000)  # the editor is ready: a file set before this is dropped
    editor.locator("input[type=file]").first.set_input_files(str(tmp_path / "input.png"))
    editor.get_by_text("select the draw tool to start").wait_for(state="hidden", timeout=30_000)  # image loaded
    box = canvas.bounding_box()
    start_x, start_y = box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.3
    page.mouse.move(start_x, start_y)
    page.mouse.down()
    for step in range(1, 11):  # a diagonal brush stroke
        page.mouse.move(start_x + step * box["width"] * 0.03, start_y + step * box["height"] * 0.03)
    page.mouse.up()
    page.locator("#inpaint-prompt textarea").fill("a red heart")
    page.locator("#inpaint-generate").click()
    result, parameters = download(wait_for_result(page, "inpaint"))
    assert parameters["steps"] == STEPS and parameters["prompt"] == "a red heart"
    assert result.shape == source.shape
    unchanged = (result == source).all(axis=-1).mean()
    assert 0.2 < unchanged < 0.98, unchanged  # the stroke was repainted, the rest kept exactly


def test_a_preview_appears_in_the_gallery_before_the_final_image(page, tmp_path):
    """The server previews every step at most 5 times a second (tests/conftest.py): a run of 30 steps on the tiny
    model shows at least one preview, and then the final image replaces it."""
    page.get_by_role("tab", name="Unconditional").click()
    set_steps(page, "uncond", 30)
    page.evaluate(
        """() => {
            window.galleryCaptions = [];
            const gallery = document.querySelector('#uncond-gallery');
            new MutationObserver(() => window.galleryCaptions.push(gallery.innerText)).observe(
                gallery, {childList: true, subtree: true, characterData: true});
        }"""
    )
    page.locator("#uncond-generate").click()
    image = wait_for_result(page, "uncond")
    captions = page.evaluate("() => window.galleryCaptions")
    previews = [index for index, text in enumerate(captions) if re.search(r"preview · step \d+ of 30", text)]
    finals = [index for index, text in enumerate(captions) if FINAL_CAPTION.search(text)]
    assert previews and finals and previews[0] < finals[0], captions[-5:]
    page.screenshot(path=str(tmp_path / "final.png"), full_page=True)
    _, parameters = download(image)
    assert parameters["steps"] == 30


def test_stop_shows_the_current_images_and_the_step_it_stopped_at(page, tmp_path):
    page.get_by_role("tab", name="Unconditional").click()
    set_steps(page, "uncond", 1000)
    # No previews here (the previews test has them): 1000 steps of 5 previews a second kept a starved CPU's browser
    # too busy to take the Stop click within 30 s while the rest of the suite ran beside it.
    previews = page.locator("#uncond-previews input[type=checkbox]")
    previews.uncheck()
    page.locator("#uncond-generate").click()
    page.locator("#uncond-gallery").get_by_text(re.compile(r"\d+/1000")).first.wait_for(timeout=60_000)
    page.locator("#uncond-stop").click()
    page.get_by_text(re.compile(r"Stopped at step \d+ of 1000")).first.wait_for(timeout=30_000)
    # The stopped run's own images (with their parameters), not the last preview before them.
    page.locator("#uncond-gallery").get_by_text(re.compile(r"stopped at step \d+ of 1000")).first.wait_for(
        timeout=30_000
    )
    image = page.locator("#uncond-gallery img").first
    image.wait_for(state="visible", timeout=30_000)
    page.screenshot(path=str(tmp_path / "stopped.png"), full_page=True)
    _, parameters = download(image)
    assert parameters["steps"] == 1000  # this run's image, not a previous one
    page.get_by_text('"interrupted": true').first.wait_for(timeout=10_000)
    step = int(re.search(r"stopped at step (\d+) of 1000", page.locator("#uncond-gallery").inner_text()).group(1))
    assert 0 < step < 1000
    previews.check()


def test_ctrl_enter_generates_reuse_seed_zip_send_to_and_png_info_sends_it_all_back(page, tmp_path):
    from playwright.sync_api import expect

    page.get_by_role("tab", name="txt2img").click()
    set_steps(page, "txt2img", STEPS)
    prompt, seed = page.locator("#txt2img-prompt textarea"), page.locator("#txt2img-seed input")
    prompt.fill("a red")
    prompt.press("Enter")  # a newline in the prompt, not a run
    prompt.press_sequentially("heart")
    expect(prompt).to_have_value("a red\nheart")
    prompt.press("Control+Enter")
    image = wait_for_result(page, "txt2img")
    _, parameters = download(image)
    assert parameters["prompt"] == "a red\nheart" and parameters["steps"] == STEPS
    expect(seed).to_have_value("-1")
    page.locator("#txt2img-reuse-seed").click()
    expect(seed).to_have_value(str(parameters["seed"]), timeout=10_000)
    page.locator("#txt2img-zip").click()
    zip_name = f"txt2img-{parameters['seed']}-a-red-heart-1-images"  # the page shows ".zip" apart
    expect(page.locator("#txt2img-zip-file")).to_contain_text(zip_name, timeout=10_000)
    page.locator("#txt2img-send-img2img").click()
    expect(page.locator("#img2img-image img").first).to_be_visible(timeout=10_000)  # the img2img tab, with the image
    page.get_by_role("tab", name="txt2img").click()

    with urllib.request.urlopen(image.get_attribute("src")) as response:
        (tmp_path / "made.png").write_bytes(response.read())
    prompt.fill("something else")
    seed.fill("-1")
    set_steps(page, "txt2img", 20)
    page.get_by_role("tab", name="PNG info").click()
    page.locator("#png-image input[type=file]").first.set_input_files(str(tmp_path / "made.png"))
    page.locator("#png-parameters").get_by_text('"studio"').first.wait_for(timeout=30_000)
    page.locator("#send-txt2img").click()
    expect(prompt).to_be_visible(timeout=10_000)  # the txt2img tab is selected again
    expect(prompt).to_have_value("a red\nheart", timeout=10_000)
    expect(seed).to_have_value(str(parameters["seed"]))
    expect(page.locator("#txt2img-steps input[type=range]")).to_have_value(str(STEPS))
    page.screenshot(path=str(tmp_path / "sent.png"), full_page=True)
