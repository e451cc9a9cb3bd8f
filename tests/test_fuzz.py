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


def test_hostile_png_metadata_is_answered_in_words_and_the_server_keeps_serving(client, files, tmp_path):
    """/read_parameters on PNGs whose metadata is hostile: a `parameters` text of 80 KB without a colon (on which
    stable-diffusion-webui's regex backtracks for most of a minute, holding every request of the server), studio
    JSON nested 100,000 or 300 deep, integers beyond 64 bits, a lone surrogate, not an object, `Steps: inf`. Each
    answers within seconds, a dict naming what it could not use (or a refusal in words), and the server answers a
    good request after."""
    import json
    import time

    from PIL.PngImagePlugin import PngInfo

    hostile = {
        "80 KB without a colon": {"parameters": "a" * 80_000},
        "nested 100,000 deep": {"studio-parameters": '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}"},
        "nested 300 deep": {"studio-parameters": '{"steps": 2, "sweep": ' + "[" * 300 + "]" * 300 + "}"},
        "beyond 64 bits": {"studio-parameters": json.dumps({"seed": 2**64 + 1, "steps": 2**70})},
        "lone surrogate": {"studio-parameters": '{"task": "txt2img", "prompt": "a \\ud800 cat"}'},
        "not an object": {"studio-parameters": "[1, 2]"},
        "Steps: inf": {"parameters": "a cat\nSteps: inf, Sampler: Euler, CFG scale: 7, Seed: 1"},
    }
    good = {"parameters": "a cat\nSteps: 2, Sampler: Euler, CFG scale: 7, Seed: 11"}
    paths = {}
    for name, chunks in {**hostile, "good": good}.items():
        info = PngInfo()
        for key, text in chunks.items():
            if key == "parameters":
                info.add_itxt(key, text)  # UTF-8, as stable-diffusion-webui and the studio write it
            else:
                info.add_text(key, text)
        paths[name] = tmp_path / f"{len(paths)}.png"
        Image.new("RGB", (8, 8)).save(paths[name], pnginfo=info)
    unanswered = []
    for name in hostile:
        started = time.monotonic()
        try:
            read = client.submit(image=handle_file(str(paths[name])), api_name="/read_parameters").result(timeout=60)
        except AppError as error:
            read = str(error)
        in_words = isinstance(read, str) and read and "upstream Gradio app has raised an exception" not in read
        if not (isinstance(read, dict) and read.get("not_used")) and not in_words:
            unanswered.append(f"{name}: {str(read)[:200]}")
        if time.monotonic() - started > 20:
            unanswered.append(f"{name}: took {time.monotonic() - started:.0f} s")
    assert not unanswered, "\n".join(unanswered)
    read = client.predict(image=handle_file(str(paths["good"])), api_name="/read_parameters")
    assert read["tab"] == "txt2img" and read["values"]["seed"] == 11 and read["not_used"] == []
    api = client.view_api(print_info=False, return_format="dict")
    gallery, _ = client.predict(**good_arguments("/unconditional", files, api), api_name="/unconditional")
    assert len(gallery) >= 1


def test_hostile_sweep_settings_are_refused_by_name_before_anything_runs(client, files):
    """/sweep's `settings` dict goes through the endpoint's own typing (a picture path, "2", True or "1" where a
    number belongs), long texts and a sweep past the compute limit are refused by name, nothing echoes a megabyte,
    and the server keeps serving."""
    good = {"tab": "txt2img", "parameter": "guidance_scale", "values": "1, 7", "seeds": "1"}
    small = {"width": 64, "height": 64, "steps": 2, "prompt": "a heart"}
    large = {**small, "width": 256, "height": 256}  # a cell of 8 steps is 1.6 megapixel-steps at this size
    cases = [
        ({**good, "tab": "img2img", "settings": {"image": "/etc/passwd"}}, "image is a picture"),
        ({**good, "settings": {**small, "steps": "2"}}, "steps must be an integer"),
        ({**good, "settings": {**small, "steps": True}}, "steps must be an integer"),
        ({**good, "settings": {**small, "seed": "1"}}, "seed must be an integer"),
        ({**good, "settings": {**small, "prompt": ["a"]}}, "prompt must be text"),
        ({**good, "settings": {**small, "prompt": "a" * 20_000}}, "prompt has 20000 characters"),
        ({**good, "settings": {**small, "x" * 100_000: 1}}, "is not a keyword of /txt2img"),
        ({**good, "values": "9" * 10**6, "settings": small}, "values has 1000000 characters"),
        # Each cell alone is within the CPU's limit; the sixteen together are not.
        (
            {**good, "parameter": "steps", "values": "1 2 3 4 5 6 7 8", "seeds": "1 2", "settings": large},
            "sweep cells together",
        ),
    ]
    unnamed = []
    for arguments, message in cases:
        try:
            client.predict(**arguments, api_name="/sweep")
        except AppError as error:
            if message not in str(error) or len(str(error)) > 1000:
                unnamed.append(f"{str(arguments)[:80]}: {str(error)[:300]}")
        else:
            unnamed.append(f"{str(arguments)[:80]}: accepted")
    assert not unnamed, "\n".join(unnamed)
    gallery, info = client.predict(**good, settings=small, api_name="/sweep")
    assert len(gallery) == 3 and info["sweep"]["values"] == [1, 7]
