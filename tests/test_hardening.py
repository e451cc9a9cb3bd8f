"""Findings of the second security review, each reproduced: a zip that wrote gigabytes, sweep titles that took
minutes, batch counts and sweeps past the compute limit, untyped sweep settings, echoed megabytes, server paths
in the PNGs. (The metadata parser, Stop with a full queue and per-session memory have tests of their own.)"""

import os
import time
import zipfile

import gradio as gr
import pytest
from PIL import Image, ImageDraw

from pipelines import limits
from pipelines import unconditional as uncond
from pipelines.batches import batch_requests
from pipelines.outputs import save_png, sweep_outputs, zip_outputs
from pipelines.validation import MAX_TEXT


@pytest.fixture(autouse=True)
def cpu_limits(monkeypatch):
    for name in limits.ENV.values():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("STUDIO_DEVICE", "cpu")


def test_a_zip_of_one_image_listed_a_thousand_times_holds_it_once(tmp_path):
    image = save_png(Image.new("RGB", (8, 8)), {"seed": 1}, folder=str(tmp_path))
    archive = zip_outputs([image] * 1000, "all.zip", folder=str(tmp_path))
    with zipfile.ZipFile(archive) as opened:
        assert len(opened.namelist()) == 1
    assert os.path.getsize(archive) < 2 * os.path.getsize(image)


def test_a_zip_is_refused_above_its_image_count_and_size_before_anything_is_written(tmp_path, monkeypatch):
    from ui.controls import ZIP_MAX_IMAGES, zip_gallery

    images = [save_png(Image.new("RGB", (8, 8)), {"seed": seed}, folder=str(tmp_path)) for seed in range(3)]
    before = set(os.listdir(tmp_path))
    with pytest.raises(ValueError, match="a zip holds at most 2 images, got 3"):
        zip_outputs(images, "all.zip", folder=str(tmp_path), max_files=2)
    big = tmp_path / "big.png"
    big.write_bytes(os.urandom(2 * 2**20))
    monkeypatch.setenv("STUDIO_ZIP_MAX_MB", "1")
    with pytest.raises(ValueError, match=r"add up to 2 MB, above this server's limit of 1 MB .*STUDIO_ZIP_MAX_MB"):
        zip_outputs([str(big)], "all.zip", folder=str(tmp_path))
    assert set(os.listdir(tmp_path)) == before | {"big.png"}
    # Through the page's event: a gallery longer than any tab makes is refused by name.
    with pytest.raises(gr.Error, match=f"at most {ZIP_MAX_IMAGES} images, got {ZIP_MAX_IMAGES + 1}"):
        zip_gallery([(images[0], "")] * (ZIP_MAX_IMAGES + 1))
    assert ZIP_MAX_IMAGES == 8 * 8 * 2  # 8 batches of 8 images with their unguided twins


def test_the_output_folder_keeps_at_most_its_byte_limit_oldest_first(tmp_path):
    paths = []
    for index in range(4):
        paths.append(save_png(Image.new("RGB", (8, 8)), {"seed": index}, folder=str(tmp_path)))
        os.utime(paths[-1], (time.time() - 100 + index, time.time() - 100 + index))
    size = os.path.getsize(paths[0])
    assert sweep_outputs(str(tmp_path), 3600, max_bytes=int(2.5 * size)) == 2
    assert [os.path.exists(path) for path in paths] == [False, False, True, True]


def test_a_long_sweep_title_is_fitted_in_a_few_measurements():
    from pipelines.sweep import _font, fitted

    draw = ImageDraw.Draw(Image.new("RGB", (8, 8)))
    font = _font(14)
    calls = 0
    measure = draw.textlength

    def counted(*args, **kwargs):
        nonlocal calls
        calls += 1
        return measure(*args, **kwargs)

    draw.textlength = counted
    text = "a red heart " * 833  # 10,000 characters: 5,000 took 115 s, a measurement per character cut
    title = fitted(draw, text, font, 400)
    assert calls <= 20 and title.endswith("…") and measure(title, font=font) <= 400
    assert measure(text[: len(title)] + "…", font=font) > 400  # one more character does not fit
    assert fitted(draw, "short", font, 400) == "short"


def test_a_prompt_is_refused_by_name_above_the_text_limit(configured):
    request = uncond.Request(model=configured["unet"], prompt="a" * (MAX_TEXT + 1), clip_scale=1)
    with pytest.raises(ValueError, match=rf"^prompt has {MAX_TEXT + 1} characters, above the limit of {MAX_TEXT}"):
        uncond.validate(request)
    uncond.validate(uncond.Request(model=configured["unet"], prompt="a" * MAX_TEXT, clip_scale=1))


def test_batch_count_is_counted_against_the_limit_as_a_whole(configured):
    # steps 500 x batch 4 of the 32 px tiny model: 2.05 megapixel-steps, within the CPU's 3 on its own.
    request = uncond.Request(model=configured["unet"], steps=500, batch_size=4, seed=1)
    assert len(batch_requests(uncond.validate, request, 1)) == 1
    with pytest.raises(ValueError, match=r"this request's 16\.4 megapixel-steps \(8 batches together; lower batch_c"):
        batch_requests(uncond.validate, request, 8)


def test_sweep_settings_are_typed_as_the_endpoints_arguments():
    from ui.sweep import tab_settings

    pictures = {"image": None, "mask": None, "clip_image": None}
    for settings, message in [
        ({"image": "/etc/passwd"}, "settings: image is a picture; pass it as the sweep's image argument"),
        ({"steps": "2"}, "settings: steps must be an integer, got '2'"),
        ({"steps": True}, "settings: steps must be an integer, got True"),
        ({"steps": 2.5}, "settings: steps must be an integer, got 2.5"),
        ({"seed": "1"}, "settings: seed must be an integer, got '1'"),
        ({"guidance_scale": [7]}, r"settings: guidance_scale must be a number, got \[7\]"),
        ({"prompt": 5}, "settings: prompt must be text, got int"),
        ({"x" * 10**6: 1}, "is not a keyword of /img2img"),
    ]:
        with pytest.raises(ValueError, match=message) as refused:
            tab_settings("img2img", settings, pictures)
        assert len(str(refused.value)) < 1000
    fields = tab_settings("img2img", {"steps": 2.0, "seed": 1, "model": None, "guidance_scale": 7}, pictures)
    assert fields["steps"] == 2 and fields["guidance_scale"] == 7.0 and fields["model"] is None


def test_a_megabyte_of_values_is_not_echoed():
    from pipelines.sweep import plan_sweep

    for values in ("9" * 10**6, "x" * 10**6):
        with pytest.raises(ValueError) as refused:
            plan_sweep("txt2img", "steps", values, "", default_seed=1)
        assert len(str(refused.value)) < 200


def test_the_bundled_models_are_recorded_by_label_not_by_the_servers_folder(monkeypatch, tmp_path):
    from pipelines.bundled import BUNDLED_LABEL, recorded_name

    monkeypatch.setenv("BUNDLED_MODELS_DIR", str(tmp_path / "emoji"))
    assert recorded_name(f"local-dir:{tmp_path / 'emoji' / 'clip'}") == f"{BUNDLED_LABEL}: clip"
    assert recorded_name("ViT-B-32") == "ViT-B-32" and recorded_name("hf-hub:org/clip") == "hf-hub:org/clip"
    assert recorded_name(str(tmp_path / "emoji-other")) == str(tmp_path / "emoji-other")


def test_a_zip_is_written_once_in_gradios_cache_which_keeps_two_zips_at_most(tmp_path, monkeypatch):
    from ui.controls import zip_folder, zip_gallery

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    monkeypatch.setenv("STUDIO_ZIP_MAX_MB", "1")
    pictures = []
    for index in range(6):
        path = tmp_path / f"{index:032x}.png"
        path.write_bytes(os.urandom(400_000))  # different contents: different zips
        pictures.append(str(path))
    for index in range(5):
        archive = zip_gallery([(pictures[index], ""), (pictures[index + 1], "")]).value["path"]
        assert gr.File().move_resource_to_block_cache(archive) == archive  # already in the cache: not copied
    sizes = [entry.stat().st_size for entry in os.scandir(zip_folder()) for entry in os.scandir(entry.path)]
    assert 1 <= len(sizes) <= 2 and sum(sizes) <= 2 * 2**20


def test_the_inpainting_editor_checks_every_file_and_its_layers_before_decoding(tmp_path):
    from gradio.components.image_editor import EditorData
    from gradio.data_classes import FileData

    from ui_components import MAX_EDITOR_LAYERS, ImageMask

    editor = ImageMask(type="pil", format="png")
    editor.api_keyword = "image"
    assert editor.get_block_name() == gr.ImageMask().get_block_name() == "imageeditor"  # the same frontend
    small, huge = tmp_path / "small.png", tmp_path / "huge.png"
    Image.new("RGB", (16, 16)).save(small)
    Image.new("1", (6000, 6000)).save(huge)  # a few KB, 36 megapixels decoded
    layer = FileData(path=str(small))
    with pytest.raises(gr.Error, match=f"image has {MAX_EDITOR_LAYERS + 1} layers, above {MAX_EDITOR_LAYERS}"):
        editor.preprocess(EditorData(background=layer, layers=[layer] * (MAX_EDITOR_LAYERS + 1), composite=layer))
    with pytest.raises(gr.Error, match=r"image is 6000x6000 px \(36\.0 megapixels\), above this server"):
        editor.preprocess(EditorData(background=layer, layers=[FileData(path=str(huge))], composite=layer))
    value = editor.preprocess(EditorData(background=layer, layers=[layer], composite=layer))
    assert value["background"].size == (16, 16)


def test_the_pages_private_events_answer_hostile_values_in_words(tmp_path):
    from ui.controls import recorded_seed, reuse_seed
    from ui.png_info import send_to

    huge = tmp_path / "huge.png"
    Image.new("1", (6000, 6000)).save(huge)
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    assert recorded_seed(str(huge)) is None and recorded_seed(str(text)) is None
    made = save_png(Image.new("RGB", (8, 8)), {"seed": 77}, folder=str(tmp_path))
    assert recorded_seed(made) == 77 and reuse_seed([(made, "")], None) == 77
    slider = gr.Slider(0, 10)
    slider.api_keyword = "steps"
    send = send_to("txt2img", [slider])
    for read in ([1], "x", {"values": [1]}, {"values": {"steps": {"a": 1}}}, None):
        _, update = send(read)
        assert update == gr.update()
    assert send({"values": {"steps": 4}})[1]["value"] == 4


def test_a_slider_refuses_nan_with_its_own_range():
    from ui_components import Slider

    slider = Slider(0, 30, step=0.5)
    slider.api_keyword = "guidance_scale"
    with pytest.raises(gr.Error, match=r"guidance_scale must be between 0 and 30, got nan"):
        slider.preprocess(float("nan"))
