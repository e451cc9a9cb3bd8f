"""End to end: `python app.py` with tiny models, called through gradio_client like a user's script."""

import time

import numpy as np
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError
from PIL import Image

from pipelines.outputs import read_parameters


@pytest.fixture(scope="module")
def client(server):
    return Client(server, verbose=False)


def pixels(gallery_item) -> np.ndarray:
    return np.asarray(Image.open(gallery_item["image"]))


def check_pngs(gallery, seeds):
    assert len(gallery) == len(seeds)
    for item, seed in zip(gallery, seeds):
        with Image.open(item["image"]) as image:
            assert image.format == "PNG"
        assert read_parameters(item["image"])["seed"] == seed


def test_unconditional_endpoint(client, tiny_models):
    gallery, info = client.predict(
        model=tiny_models["unet"], scheduler="DPM++ 2M", steps=4, batch_size=2, seed=11, api_name="/unconditional"
    )
    check_pngs(gallery, [11, 12])
    assert info["seeds"] == [11, 12] and info["scheduler"] == "DPM++ 2M" and info["elapsed_seconds"] > 0
    again, _ = client.predict(
        model=tiny_models["unet"], scheduler="DPM++ 2M", steps=4, batch_size=1, seed=12, api_name="/unconditional"
    )
    np.testing.assert_array_equal(pixels(gallery[1]), pixels(again[0]))


def test_color_guided_endpoint(client, tiny_models):
    kwargs = dict(model=tiny_models["unet"], steps=4, batch_size=1, seed=21, color="rgba(255, 136.5, 0, 1)")
    gallery, info = client.predict(**kwargs, color_scale=4, compare=True, api_name="/color_guided")
    check_pngs(gallery, [21, 21])
    assert read_parameters(gallery[0]["image"])["kind"] == "guided"
    assert read_parameters(gallery[1]["image"])["kind"] == "unguided"
    assert info["color"] == "rgba(255, 136.5, 0, 1)" and info["color_scale"] == 4
    again, _ = client.predict(**kwargs, color_scale=4, api_name="/color_guided")
    np.testing.assert_array_equal(pixels(gallery[0]), pixels(again[0]))


def test_clip_guided_endpoint(client, tiny_models):
    gallery, info = client.predict(
        model=tiny_models["unet"],
        steps=4,
        batch_size=2,
        seed=31,
        prompt="a red heart",
        clip_scale=8,
        cuts=4,
        color="#00ff00",
        color_scale=2,
        api_name="/clip_guided",
    )
    check_pngs(gallery, [31, 32])
    assert info["prompt"] == "a red heart" and info["cuts"] == 4 and info["color_scale"] == 2


def test_bad_requests_are_errors_and_the_server_keeps_serving(client, tiny_models):
    with pytest.raises(AppError, match="notacolor"):
        client.predict(
            model=tiny_models["unet"], steps=2, seed=1, color="notacolor", color_scale=3, api_name="/color_guided"
        )
    with pytest.raises(AppError, match="minimum"):
        client.predict(model=tiny_models["unet"], steps=0, seed=1, api_name="/unconditional")
    with pytest.raises(AppError):
        client.predict(model="someone/other-model", steps=2, seed=1, api_name="/unconditional")
    gallery, _ = client.predict(model=tiny_models["unet"], steps=2, seed=1, api_name="/unconditional")
    check_pngs(gallery, [1])


def test_stop_interrupts_within_a_step(client, tiny_models):
    job = client.submit(model=tiny_models["unet"], steps=1000, seed=3, api_name="/unconditional")
    deadline = time.monotonic() + 60
    while not (job.status().progress_data or job.done()):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    client.predict(api_name="/stop")
    stopped_at = time.monotonic()
    gallery, info = job.result(timeout=60)
    assert time.monotonic() - stopped_at < 5
    assert info["interrupted"] is True and info["stopped_after_step"] < 1000
    check_pngs(gallery, [3])
