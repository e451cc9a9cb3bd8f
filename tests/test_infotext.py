"""PNG metadata other tools read: stable-diffusion-webui's `parameters` text, written and read back, beside the
studio's full JSON."""

import io
import json
import random
import re
import time

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from pipelines.infotext import format_infotext, infotext, infotext_pairs, parse_infotext, request_values
from pipelines.outputs import INFOTEXT_KEY, MAX_INFOTEXT_CHARS, METADATA_KEY, image_parameters, save_png
from pipelines.validation import MAX_TEXT

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


def test_every_scheduler_choice_reads_back_as_itself_through_webuis_sampler_and_schedule():
    from pipelines.infotext import sd_infotext
    from pipelines.params import SD

    for scheduler in SD["scheduler"].options():
        text = sd_infotext({"task": "txt2img", "prompt": "a", "scheduler": scheduler, "width": 64, "height": 64})
        _, values, skipped = request_values(parse_infotext(text))
        assert (values["scheduler"], skipped) == (scheduler, []), text
    fields = parse_infotext(sd_infotext({"task": "txt2img", "scheduler": "Euler SGM Uniform", "width": 8, "height": 8}))
    assert (fields["Sampler"], fields["Schedule type"]) == ("Euler", "SGM Uniform")  # as webui writes it


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


# stable-diffusion-webui's own regex for one pair (modules/infotext_utils.py `re_param_code`): the reference the
# linear scanner must agree with, run here only on short lines (it is quadratic in a line without a colon).
WEBUI_PAIR = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


@pytest.mark.parametrize(
    "text",
    [
        "a" * 1_000_000,
        "ab-/ " * 200_000,
        "\\" * 1_000_000,
        'Key: "' + "\\" * 999_990 + '"',
        'Key: "' + '\\"' * 499_990 + " y",
        "a: " * 70_000,
        'a: "' * 50_000,
        "a " * 100_000 + ":",
        'Key: "x, ' * 25_000,
    ],
    ids=["colonless", "key runs", "backslashes", "escaped backslashes", "escaped quotes"]
    + ["short keys", "short keys, open quotes", "a colon at the end", "open quotes"],
)
def test_a_hostile_last_line_parses_in_linear_time(text):
    """Lines on which the regex, tried at every position, backtracks through every shorter key (80 KB without a
    colon took it 47 s), and lines of a few hundred KB (the longest read is 200 KB) with many pairs: about a second
    each alone (1.3 s the slowest); the bound leaves room for a loaded 2-core machine, and a quadratic scan of 1 MB
    would take hours."""
    started = time.perf_counter()
    fields = parse_infotext(text)
    assert time.perf_counter() - started < 10.0
    assert fields["Prompt"] == text.strip() or len(infotext_pairs(text.strip())) >= 3


def test_the_pair_scanner_finds_what_stable_diffusion_webuis_regex_finds():
    """The scanner and stable-diffusion-webui's regex agree on every line of a seeded set of short lines made of
    the characters that matter: word characters, spaces and other whitespace, colons, commas, quotes, backslashes,
    hyphens, slashes, newlines and non-ASCII letters, digits and spaces."""
    rng = random.Random(7)
    characters = list('ab_1 :,"\\-/\t\n.') + ["é", "\xa0", "٣", "\u2028"]
    pieces = ["Key", "Size", ": ", ", ", '"', '\\"', "\\\\", '""', '"a, b: c"', "x y", "a-b/c"]
    for _ in range(20_000):
        line = "".join(rng.choice(characters) for _ in range(rng.randint(0, 24)))
        assert infotext_pairs(line) == WEBUI_PAIR.findall(line), repr(line)
        line = "".join(rng.choice(pieces + characters) for _ in range(rng.randint(0, 12)))
        assert infotext_pairs(line) == WEBUI_PAIR.findall(line), repr(line)


def test_tricky_well_formed_lines_read_as_stable_diffusion_webui_reads_them():
    line = (
        'Steps: 20, Prompt info: "a \\"quoted\\" word, a comma: and a colon", Hires upscaler: R-ESRGAN 4x+, '
        'Lora/LyCORIS hashes: "a: 1, b: 2", Size: 512x512, ADetailer model 2nd: face_yolov8n.pt, Empty: , '
        "Version: v1.10.1"
    )
    fields = parse_infotext(f"a cat, (masterpiece:1.2)\nNegative prompt: dog: no\n{line}")
    assert fields["Prompt"] == "a cat, (masterpiece:1.2)" and fields["Negative prompt"] == "dog: no"
    assert fields["Prompt info"] == 'a "quoted" word, a comma: and a colon'
    assert fields["Hires upscaler"] == "R-ESRGAN 4x+" and fields["Lora/LyCORIS hashes"] == "a: 1, b: 2"
    assert (fields["Size"], fields["Size-1"], fields["Size-2"]) == ("512x512", "512", "512")
    assert fields["ADetailer model 2nd"] == "face_yolov8n.pt" and fields["Empty"] == ""
    assert fields["Version"] == "v1.10.1"
    assert [key for key, _ in infotext_pairs(line)] == [key for key, _ in WEBUI_PAIR.findall(line)]
    # A quote that does not end at a comma is not a JSON string: the value runs to the next comma, as in the regex.
    assert parse_infotext('p\nAb: "x" y, Bc: 1, Cd: 2')["Ab"] == '"x" y'
    assert infotext_pairs('Ab: "x" y, Bc: 1, Cd: 2') == WEBUI_PAIR.findall('Ab: "x" y, Bc: 1, Cd: 2')
    # A one-letter key is no key (the regex wants two characters): the line is then prompt text.
    assert parse_infotext("p\nA: 1, B: 2, C: 3")["Prompt"] == "p\nA: 1, B: 2, C: 3"


def test_the_longest_texts_the_studio_writes_are_read_and_longer_chunks_are_not_parsed(tmp_path):
    """Prompts at the studio's limit, of the characters that take most room (an emoji is 12 characters in the JSON,
    a control character 6 in the parameters text) are read whole; a chunk above the limits is named, not parsed."""
    emoji, control = "\U0001f600" * MAX_TEXT, "\x01" * (MAX_TEXT - 1) + ","  # quoted: a comma
    parameters = {"task": "txt2img", "model": "m", "prompt": emoji, "negative_prompt": emoji, "clip_prompt": emoji}
    parameters |= {"steps": 2, "seed": 1, "width": 64, "height": 64, "scheduler": "DDIM", "clip_scale": 1.0}
    widest = {**parameters, "clip_prompt": control}
    image = Image.new("RGB", (8, 8))
    with Image.open(save_png(image, parameters, str(tmp_path))) as png:
        assert len(png.text[METADATA_KEY]) > 3 * 12 * MAX_TEXT
        assert image_parameters(png) == {"source": "studio", "parameters": parameters}
    with Image.open(save_png(image, widest, str(tmp_path))) as png:
        assert len(png.text[INFOTEXT_KEY]) > 6 * MAX_TEXT
        fields = image_parameters(png_with(text=png.text[INFOTEXT_KEY]))["parameters"]
        assert fields["CLIP prompt"] == control and fields["Prompt"] == emoji
    too_long = {INFOTEXT_KEY: png_with(text="a" * (MAX_INFOTEXT_CHARS + 1)), METADATA_KEY: png_with("{}" * 300_000)}
    for key, png in too_long.items():
        read = image_parameters(png)
        assert read["source"] == "none" and read["not_used"][0].startswith(f"{key}: not read: too long")


def png_with(studio: str | None = None, text: str | None = None) -> Image.Image:
    """An 8x8 PNG, written and opened again in memory, carrying a studio JSON text chunk and/or a `parameters`
    iTXt chunk of these texts."""
    info = PngInfo()
    if text is not None:
        info.add_itxt(INFOTEXT_KEY, text)
    if studio is not None:
        info.add_text(METADATA_KEY, studio)
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG", pnginfo=info)
    buffer.seek(0)
    return Image.open(buffer)


WEBUI_LINE = "Sampler: Euler, CFG scale: 7, Seed: 1"
# (studio JSON, parameters text, the key the answer must name): what a hostile or damaged PNG may carry.
HOSTILE = {
    "JSON list": ("[1, 2]", None, METADATA_KEY),
    "JSON number": ("5", None, METADATA_KEY),
    "JSON string": ('"x"', None, METADATA_KEY),
    "JSON null": ("null", None, METADATA_KEY),
    "JSON damaged": ('{"seed": 1', f"a cat\n{WEBUI_LINE}", METADATA_KEY),
    "seeds a number": ('{"seeds": 5, "seed": 3, "steps": 4}', None, "seeds"),
    "model a list": ('{"task": "txt2img", "model": ["a", "b"], "seeds": [1], "seed": 1}', None, "model"),
    "color decoder a number": ('{"task": "txt2img", "color_decoder": 5}', None, "color_decoder"),
    "clip scale text": ('{"clip_scale": "x", "steps": 3}', None, "clip_scale"),
    "steps true": ('{"steps": true, "task": "img2img"}', None, "steps"),
    "steps out of range": ('{"steps": 100000000}', None, "steps"),
    "a batch of ten thousand": (json.dumps({"seeds": list(range(10**4)), "seed": 5}), None, "batch_size"),
    "nested 100,000 deep": ('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}", None, METADATA_KEY),
    "objects nested 100,000 deep": ('{"a": ' * 100_000 + "1" + "}" * 100_000, None, METADATA_KEY),
    "nested 300 deep": ('{"steps": 2, "sweep": ' + "[" * 300 + "]" * 300 + "}", None, "sweep"),
    "integers beyond 64 bits": (json.dumps({"seed": 2**64 + 1, "elapsed_seconds": -(2**70)}), None, "seed"),
    "lone surrogate": ('{"task": "txt2img", "prompt": "a \\ud800 cat"}', None, "prompt"),
    "lone surrogate key": ('{"\\ud800": 1, "steps": 2}', None, "\\ud800"),
    "NaN": ('{"clip_scale": NaN, "eta": Infinity}', None, "clip_scale"),
    "Steps: inf": (None, f"a cat\nSteps: inf, {WEBUI_LINE}", "Steps"),
    "Steps: nan": (None, f"a cat\nSteps: nan, {WEBUI_LINE}", "Steps"),
    "Steps: 1e308": (None, f"a cat\nSteps: 1e308, {WEBUI_LINE}", "Steps"),
    "CFG scale: 1e308": (None, "a cat\nSteps: 2, Sampler: Euler, CFG scale: 1e308, Seed: 1", "guidance_scale"),
    "Size of 5000 digits": (None, f"a cat\nSize: {'9' * 5000}x64, {WEBUI_LINE}", "Size"),
    "quoted lone surrogate": (None, f'a cat\nModel: "\\ud800", {WEBUI_LINE}', "Model"),
    "Studio task: no tab": (None, f"a cat\nStudio task: rm -rf, {WEBUI_LINE}", "Studio task"),
    "80 KB without a colon": (None, "a" * 80_000, "prompt"),
    "parameters too long": (None, "a: b, " * 40_000, INFOTEXT_KEY),
}


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_metadata_is_read_around_and_named_never_an_exception(name):
    """/read_parameters on a PNG with hostile metadata: a dict that Gradio's JSON (orjson) carries, what can be read
    read, the bad key named in "not_used", the values of the kinds the tabs' controls take."""
    import gradio as gr
    import orjson

    from ui.png_info import read_parameters

    studio, text, key = HOSTILE[name]
    image = png_with(studio, text)
    started = time.perf_counter()
    read = read_parameters(image)
    assert time.perf_counter() - started < 5.0  # the backtracking regex took minutes on such inputs
    assert isinstance(read, dict) and read["source"] in ("studio", "stable-diffusion-webui", "none")
    orjson.dumps(read)
    gr.JSON().postprocess(read)
    assert any(key.lower() in message.lower() for message in read["not_used"]), read["not_used"]
    assert len(read["not_used"]) <= 20 and all(len(message) < 300 for message in read["not_used"])
    for keyword, value in read.get("values", {}).items():
        if keyword in ("steps", "seed", "batch_size", "cuts", "width", "height"):
            assert type(value) is int and -1 <= value < 2**32, (keyword, value)
        if keyword in ("prompt", "negative_prompt", "model", "scheduler", "color_decoder", "task"):
            assert isinstance(value, str) and len(value) <= MAX_TEXT, keyword


def test_what_can_be_read_of_hostile_metadata_is_read():
    from ui.png_info import read_parameters

    read = read_parameters(png_with('{"task": "txt2img", "model": ["a"], "seeds": [4, 5], "seed": 5, "steps": 3}'))
    assert (read["tab"], read["image_index"], read["values"]["steps"]) == ("txt2img", 1, 3)
    assert (read["values"]["seed"], read["values"]["batch_size"]) == (4, 2) and "model" not in read["values"]
    read = read_parameters(png_with('{"seeds": 5, "seed": 3, "steps": 4.0, "color_scale": 1}'))
    assert read["tab"] == "color_guided" and read["values"]["seed"] == 3 and read["values"]["batch_size"] == 1
    assert type(read["values"]["steps"]) is int and "seeds" not in read["values"]
    read = read_parameters(png_with("[1, 2]", f"a cat\nSteps: inf, {WEBUI_LINE}"))
    assert read["source"] == "stable-diffusion-webui" and read["values"]["seed"] == 1 and "steps" not in read["values"]
    read = read_parameters(png_with(json.dumps({f"k{index}": 2**70 for index in range(1000)})))
    assert len(read["not_used"]) == 20 and read["not_used"][-1] == "... and 981 more"
    assert read_parameters(png_with()) == {"source": "none"}


def test_a_failure_while_reading_is_an_error_in_words(monkeypatch):
    """Whatever goes wrong while reading a PNG's metadata, /read_parameters answers with a gr.Error that says so,
    never a bare "Error"."""
    import gradio as gr

    import ui.png_info

    def broken(image):
        raise KeyError("x")

    monkeypatch.setattr(ui.png_info, "image_parameters", broken)
    with pytest.raises(gr.Error, match="could not read this image's parameters"):
        ui.png_info.read_parameters(png_with(text=f"a cat\n{WEBUI_LINE}"))
    with pytest.raises(gr.Error, match="image is empty"):
        ui.png_info.read_parameters(None)
