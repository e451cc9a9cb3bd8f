"""PNG metadata other tools read: stable-diffusion-webui's `parameters` text, written and read back, beside the
studio's full JSON."""

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from pipelines.infotext import format_infotext, infotext, parse_infotext, request_values
from pipelines.outputs import INFOTEXT_KEY, METADATA_KEY, image_parameters, save_png

# As stable-diffusion-webui 1.10 writes it (modules/processing.py create_infotext): prompt lines, the negative
# prompt, then one line of pairs; a value with a comma or colon is a JSON string.
WEBUI_TEXT = (
    "a watercolor fox in the snow, (masterpiece:1.2)\n"
    "second prompt line\n"
    "Negative prompt: blurry, lowres\n"
    "Steps: 30, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 1234567890, Size: 512x768, "
    'Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Lora hashes: "fox: a1b2c3, snow: d4e5f6", Version: v1.10.1'
)


def test_stable_diffusion_webui_text_reads_into_txt2img_values():
    fields = parse_infotext(WEBUI_TEXT)
    assert fields["Prompt"] == "a watercolor fox in the snow, (masterpiece:1.2)\nsecond prompt line"
    assert fields["Negative prompt"] == "blurry, lowres" and fields["Lora hashes"] == "fox: a1b2c3, snow: d4e5f6"
    tab, values, skipped = request_values(fields)
    assert tab == "txt2img" and skipped == []
    assert values["scheduler"] == "DPM++ 2M Karras" and values["steps"] == 30 and values["guidance_scale"] == 6.5
    assert (values["seed"], values["width"], values["height"]) == (1234567890, 512, 768)
    assert values["negative_prompt"] == "blurry, lowres" and values["model"] == "v1-5-pruned-emaonly"


def test_older_sampler_names_and_unknown_samplers():
    old = request_values(parse_infotext("a cat\nSteps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 1"))
    assert old[1]["scheduler"] == "DPM++ 2M Karras"
    _, values, skipped = request_values(parse_infotext("a cat\nSteps: 20, Sampler: Heun, CFG scale: 7, Seed: 1"))
    assert "scheduler" not in values and skipped == ["Sampler: Heun (schedule Automatic) is not offered"]
    # Fewer than three pairs on the last line: it is prompt text, as stable-diffusion-webui reads it.
    assert parse_infotext("a cat\nSteps: 20")["Prompt"] == "a cat\nSteps: 20"


def test_every_key_the_studio_writes_it_reads_back():
    parameters = {
        "task": "txt2img",
        "model": "/models/sd",
        "prompt": 'a "red" heart: shiny, big',
        "negative_prompt": "blurry\nlowres",
        "scheduler": "Euler a",
        "steps": 25,
        "guidance_scale": 7.5,
        "width": 64,
        "height": 96,
        "seed": 4,
        "color": "rgb(30, 144, 255)",
        "color_scale": 1.5,
        "color_decoder": "vae: the VAE decoder",
        "clip_prompt": "a frog, green",
        "clip_scale": 4.0,
        "clip_image": "64x64 sha256:0123456789abcdef",
        "clip_image_scale": 2.0,
        "cuts": 6,
        "clip_model": "local-dir:/models/clip",
    }
    text = infotext(parameters, (64, 96))
    tab, values, skipped = request_values(parse_infotext(text))
    assert tab == "txt2img" and skipped == []
    for key in ("prompt", "scheduler", "steps", "guidance_scale", "width", "height", "seed", "color", "color_scale"):
        assert values[key] == parameters[key], key
    assert values["negative_prompt"] == "blurry\nlowres" and values["color_decoder"] == "vae"
    assert (values["clip_prompt"], values["clip_scale"], values["clip_image_scale"], values["cuts"]) == (
        "a frog, green",
        4.0,
        2.0,
        6,
    )
    inpainting = {"task": "inpaint", "prompt": "a hat", "steps": 20, "seed": 3, "strength": 0.8, "mask_blur": 6}
    inpainting |= {"outpaint_left": 16, "outpaint_right": 0, "outpaint_top": 8, "outpaint_bottom": 24}
    tab, values, _ = request_values(parse_infotext(infotext(inpainting, (96, 96))))
    assert tab == "inpaint" and all(values[key] == value for key, value in inpainting.items() if key != "task")
    pixel = {"model": "emoji", "scheduler": "DDIM", "steps": 9, "eta": 0.5, "seed": 2, "prompt": "frog"}
    pixel |= {"clip_scale": 3.0, "cuts": 4, "gradient_method": "unet", "color": "#ff8800", "color_scale": 0.5}
    tab, values, _ = request_values(parse_infotext(infotext(pixel, (32, 32))))
    assert tab == "clip_guided" and values["eta"] == 0.5 and values["gradient_method"] == "unet"
    assert (values["prompt"], values["scheduler"], values["color_scale"], values["model"]) == (
        "frog",
        "DDIM",
        0.5,
        "emoji",
    )


def test_a_png_carries_both_chunks_and_says_where_its_parameters_come_from(tmp_path):
    image = Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8))
    parameters = {"model": "m", "scheduler": "DDIM", "steps": 3, "seed": 7, "kind": "unguided"}
    path = save_png(image, parameters, str(tmp_path))
    with Image.open(path) as png:
        assert png.text[INFOTEXT_KEY].startswith("Steps: 3, Sampler: DDIM, Seed: 7, Size: 8x8, Model: m")
        assert image_parameters(png) == {"source": "studio", "parameters": parameters}
    info = PngInfo()
    info.add_text(INFOTEXT_KEY, WEBUI_TEXT)
    image.save(tmp_path / "webui.png", pnginfo=info)
    with Image.open(tmp_path / "webui.png") as png:
        read = image_parameters(png)
    assert read["source"] == "stable-diffusion-webui" and read["parameters"]["Seed"] == "1234567890"
    image.save(tmp_path / "plain.png")
    with Image.open(tmp_path / "plain.png") as png:
        assert image_parameters(png) == {"source": "none"}
    assert METADATA_KEY != INFOTEXT_KEY


def test_format_quotes_only_what_needs_it():
    text = format_infotext("p", "", {"A": "x", "B": "y, z", "C": None, "D": 1})
    assert text == 'p\nA: x, B: "y, z", D: 1'
