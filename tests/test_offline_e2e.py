"""A new user's first run with no network: `python app.py` with no model settings, the Hub unreachable and an empty
Hugging Face cache; the bundled emoji models are present."""

import os
import re

import numpy as np
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError
from PIL import Image

from pipelines.bundled import BUNDLED_LABEL, unavailable_message
from pipelines.outputs import read_parameters
from tests.conftest import MODEL_SETTINGS, running_app

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
API_PAGE = os.path.join(REPO_ROOT, "docs", "api.md")  # the runnable API page
API_PAGE_URL = "http://127.0.0.1:7860/"  # the URL its snippets call

MIN_PIXEL_STD = 4.0  # of 255: a flat (all-black, all-white, NaN-gray) image is far below this


@pytest.fixture(scope="module")
def offline_client(emoji_bundle, tmp_path_factory):
    settings = {
        "HF_HUB_OFFLINE": "1",
        "BUNDLED_MODELS_DIR": str(emoji_bundle),
        "HF_HOME": str(tmp_path_factory.mktemp("empty-hf-home")),  # nothing cached, like a new machine
    }
    with running_app(settings, tmp_path_factory, drop=MODEL_SETTINGS) as url:
        yield Client(url, verbose=False)


def check_images(gallery, count: int) -> None:
    assert len(gallery) == count
    for item in gallery:
        pixels = np.asarray(Image.open(item["image"]).convert("RGB"), dtype=np.float32)
        assert pixels.std() > MIN_PIXEL_STD, pixels.std()
        assert read_parameters(item["image"])["seed"] >= 0


def test_every_default_is_the_bundled_model_and_makes_images(offline_client, emoji_bundle):
    # No model argument: the endpoint uses the Model box's default, as a first click in the page does.
    gallery, info = offline_client.predict(steps=3, batch_size=2, seed=5, api_name="/unconditional")
    check_images(gallery, 2)
    assert info["model"] == BUNDLED_LABEL
    gallery, info = offline_client.predict(
        steps=3, seed=5, prompt="red heart", clip_scale=3, cuts=2, api_name="/clip_guided"
    )
    check_images(gallery, 1)
    assert info["model"] == BUNDLED_LABEL and info["clip_model"] == f"{BUNDLED_LABEL}: clip"
    gallery, info = offline_client.predict(prompt="red heart", steps=3, seed=5, api_name="/txt2img")
    check_images(gallery, 1)
    assert info["model"] == BUNDLED_LABEL  # a label, never the server's folder


@pytest.mark.parametrize(
    ("endpoint", "kind", "model"),
    [
        ("/unconditional", "unconditional", "google/ddpm-celebahq-256"),
        ("/txt2img", "sd", "stable-diffusion-v1-5/stable-diffusion-v1-5"),
    ],
)
def test_a_hub_model_that_is_not_cached_is_one_sentence(offline_client, endpoint, kind, model):
    arguments = {"prompt": "red heart"} if kind == "sd" else {}
    with pytest.raises(AppError) as caught:
        offline_client.predict(model=model, steps=2, seed=1, **arguments, api_name=endpoint)
    message = str(caught.value)
    assert message == unavailable_message(model, kind, bundled_offered=True)
    assert len(message) < 200 and "stacktrace" not in message and "local_files_only" not in message
    gallery, _ = offline_client.predict(steps=2, seed=1, **arguments, api_name=endpoint)  # still serving
    check_images(gallery, 1)


def api_page_snippets() -> list[str]:
    """Every Python block of docs/api.md, in page order."""
    with open(API_PAGE, encoding="utf-8") as page:
        return re.findall(r"```python\n(.*?)```", page.read(), re.S)


def test_every_python_snippet_of_the_api_page_runs_as_written(offline_client, monkeypatch):
    """docs/api.md, run block by block against a new user's server (only its URL swapped): every endpoint
    is called, and each call that makes images makes real ones (the MCP and /stop snippets assert nothing of their
    own, so their printed results are checked here)."""
    from gradio_client import Client

    calls = []
    predict = Client.predict

    def recording(self, *args, **kwargs):
        result = predict(self, *args, **kwargs)
        calls.append((kwargs.get("api_name"), result))
        return result

    monkeypatch.setattr(Client, "predict", recording)
    monkeypatch.chdir(REPO_ROOT)  # the snippets name examples/apple.png
    printed = []
    namespace = {"print": lambda *values, **_: printed.append(values)}
    snippets = api_page_snippets()
    assert len(snippets) >= 4
    for snippet in snippets:
        code = snippet.replace(API_PAGE_URL, offline_client.src)
        exec(compile(code, "docs/api.md", "exec"), namespace)  # noqa: S102 - the page's own code

    endpoints = {name for name, _ in calls}
    generation = {"/unconditional", "/color_guided", "/clip_guided", "/txt2img", "/img2img", "/inpaint"}
    assert endpoints == generation | {"/sweep", "/read_parameters", "/stop"}
    for name, result in calls:
        if name in generation | {"/sweep"}:
            gallery, info = result
            check_images(gallery, len(gallery))
            assert gallery and (info["sweep"] if name == "/sweep" else info["seeds"])
    interrupted, stopped_after_step = printed[-3]  # the Stop snippet's
    assert interrupted is True and stopped_after_step < 1000
    tools, mcp_result = printed[-2], printed[-1]
    assert "txt2img" in tools[0] and "stop" not in tools[0]
    assert "txt2img-5-a-red-heart.png" in mcp_result[0] and "'seeds': [5]" in mcp_result[0]
