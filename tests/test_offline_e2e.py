"""A new user's first run with no network: `python app.py` with no model settings, the Hub unreachable and an empty
Hugging Face cache; the bundled emoji models are present."""

import numpy as np
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError
from PIL import Image

from pipelines.bundled import BUNDLED_LABEL, unavailable_message
from pipelines.outputs import read_parameters
from tests.conftest import MODEL_SETTINGS, running_app

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
    assert info["model"] == BUNDLED_LABEL and info["clip_model"].startswith(f"local-dir:{emoji_bundle}")
    gallery, info = offline_client.predict(prompt="red heart", steps=3, seed=5, api_name="/txt2img")
    check_images(gallery, 1)
    assert info["model"].startswith(str(emoji_bundle))


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
