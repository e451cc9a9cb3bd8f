"""Hostile values through gradio_client against the running app (tiny models): every one is refused with an error
that names the parameter, never a hang, a crash or a bare "upstream Gradio app has raised an exception", and the
server answers a good request afterwards. The values are a fixed list per kind of input; which of them each
parameter gets is drawn from a seeded generator, so a run is repeatable and stays within seconds."""

import random

import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

ENDPOINTS = ["/unconditional", "/color_guided", "/clip_guided", "/txt2img", "/img2img", "/inpaint"]
PER_PARAMETER = 1  # hostile values tried per parameter (over all parameters, every value of the lists is sent)


@pytest.fixture(scope="module")
def client(server):
    return Client(server, verbose=False)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Good and hostile upload files."""
    folder = tmp_path_factory.mktemp("fuzz-files")
    good = folder / "good.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(good)
    mask = folder / "mask.png"
    Image.new("L", (64, 64), 255).save(mask)
    truncated = folder / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:200])
    text = folder / "notes.png"
    text.write_text("not an image at all")
    bomb = folder / "bomb.png"  # 6000 x 6000 of one colour: a few KB on disk, 36 megapixels decoded
    Image.new("L", (6000, 6000), 0).save(bomb)
    return {"good": good, "mask": mask, "hostile": [truncated, text, bomb]}


def hostile_values(component: str, files) -> list:
    """Values no parameter of this kind may accept."""
    if component in ("Slider", "Number"):
        return ["abc", [1], 10**12, -(10**12), 1e308, "", {"value": 1}]
    if component in ("Dropdown", "Radio"):
        return ["/etc", 7, ["x"], "../models"]
    if component == "Textbox":
        return [{"text": "a dict"}, ["a list"]]  # (a lone surrogate cannot travel in gradio_client's JSON)
    if component == "Image":
        return [handle_file(str(path)) for path in files["hostile"]]
    return []


def good_arguments(endpoint: str, files, api: dict) -> dict:
    """A cheap valid request for `endpoint`."""
    values = {
        "steps": 2,
        "seed": 1,
        "batch_size": 1,
        "prompt": "a heart",
        "negative_prompt": "",
        "guidance_scale": 7,
        "width": 64,
        "height": 64,
        "strength": 0.75,
        "mask_blur": 0,
        "image": handle_file(str(files["good"])),
        "mask": handle_file(str(files["mask"])),
    }
    names = [parameter["parameter_name"] for parameter in api["named_endpoints"][endpoint]["parameters"]]
    return {name: values[name] for name in names if name in values}


def test_every_hostile_value_is_refused_by_name_and_the_server_keeps_serving(client, files):
    api = client.view_api(print_info=False, return_format="dict")
    rng = random.Random(1234)
    # Each parameter gets the next value of its kind's shuffled list: every value is sent, and the run stays short.
    queues: dict[str, list] = {}
    tried, unnamed = 0, []
    for endpoint in ENDPOINTS:
        good = good_arguments(endpoint, files, api)
        for parameter in api["named_endpoints"][endpoint]["parameters"]:
            name, component = parameter["parameter_name"], parameter["component"]
            for _ in range(PER_PARAMETER):
                if not queues.get(component):
                    queues[component] = rng.sample(
                        hostile_values(component, files), len(hostile_values(component, files))
                    )
                if not queues[component]:
                    break
                value = queues[component].pop()
                tried += 1
                try:
                    client.predict(**{**good, name: value}, api_name=endpoint)
                except AppError as error:
                    if name not in str(error):
                        unnamed.append(f"{endpoint} {name}={str(value)[:40]!r}: {str(error)[:200]}")
                else:
                    unnamed.append(f"{endpoint} {name}={str(value)[:40]!r}: accepted")
    assert tried >= 50
    assert not unnamed, "\n".join(unnamed)
    for endpoint in ENDPOINTS:  # still serving, every endpoint
        gallery, _ = client.predict(**good_arguments(endpoint, files, api), api_name=endpoint)
        assert len(gallery) >= 1
