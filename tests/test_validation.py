"""Boundary checks: errors name the parameter, print bounds as people write them, never echo a huge value whole;
generated files go to a private folder."""

import os
import stat

import pytest

from pipelines.validation import MAX_SEED, number, resolve_seed


def test_a_huge_seed_names_the_bound_in_digits():
    with pytest.raises(ValueError) as caught:
        resolve_seed(10**30, 1)
    assert f"between -1 and {MAX_SEED - 1}," in str(caught.value) and "e+" not in str(caught.value)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "abc", None, [1], "9" * 10_000])
def test_hostile_numbers_name_the_parameter_briefly(value):
    with pytest.raises(ValueError) as caught:
        number("steps", value, int, 1, 1000)
    message = str(caught.value)
    assert message.startswith("steps must be") and len(message) < 120, message


def test_outputs_go_to_a_private_folder_per_process(monkeypatch):
    from pipelines import outputs

    monkeypatch.delenv("STUDIO_OUTPUT_DIR", raising=False)
    monkeypatch.setattr(outputs, "_private_output_dir", None)
    folder = outputs.output_dir()
    assert outputs.output_dir() == folder and not os.path.islink(folder)
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    assert os.path.basename(folder) != "guided-diffusion-studio"  # not a predictable, shared name


def _inpaint(mask, mask_blur=4, prompt="a cat"):
    from PIL import Image

    from pipelines import stable_diffusion as sd

    image = Image.new("RGB", (64, 64), "white")
    return sd.validate(sd.Request(task="inpaint", prompt=prompt, image=image, mask=mask, mask_blur=mask_blur))


def test_a_16_bit_mask_is_read_on_its_own_scale(configured):
    import numpy as np
    from PIL import Image

    values = np.zeros((64, 64), dtype=np.uint16)
    values[8:40, 8:40] = 65535
    values[40:60, 40:60] = 20000  # 78 of 255 in 8 bits: below the threshold, kept
    mask = _inpaint(Image.fromarray(values, mode="I;16")).mask
    assert np.asarray(mask)[20, 20] == 255 and np.asarray(mask)[50, 50] == 0


def test_a_mask_blur_that_erases_the_mask_is_an_error(configured):
    from PIL import Image

    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (20, 20, 30, 30))
    with pytest.raises(ValueError, match="mask_blur 20 erases"):
        _inpaint(mask, mask_blur=20)
    assert _inpaint(mask, mask_blur=2).mask_blur == 2


@pytest.mark.parametrize("field", ["prompt", "negative_prompt"])
def test_a_lone_surrogate_in_a_prompt_is_named(configured, field):
    from pipelines import stable_diffusion as sd
    from pipelines import unconditional as uncond

    with pytest.raises(ValueError, match=f"{field} has an invalid character at position 2"):
        sd.validate(sd.Request(task="txt2img", **{field: "ab\ud800c"}, width=64, height=64))
    with pytest.raises(ValueError, match="prompt has an invalid character"):
        uncond.validate(uncond.Request(model=configured["unet"], prompt="ab\ud800", clip_scale=1))
    with pytest.raises(ValueError, match="color must be text"):
        uncond.validate(uncond.Request(model=configured["unet"], color=[1, 2], color_scale=1))


def test_an_empty_txt2img_prompt_runs_with_a_warning(configured):
    from pipelines import stable_diffusion as sd

    result = sd.generate(sd.Request(task="txt2img", prompt="", steps=1, seed=1, width=64, height=64))
    assert any("prompt is empty" in warning for warning in result.info["warnings"])


def test_old_outputs_are_swept_and_nothing_else(tmp_path):
    import time

    from PIL import Image

    from pipelines.outputs import save_png, sweep_outputs

    old = save_png(Image.new("RGB", (8, 8)), {"seed": 1}, folder=str(tmp_path))
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    unrelated = tmp_path / "notes.png"
    unrelated.write_bytes(b"")
    os.utime(unrelated, (0, 0))
    fresh = save_png(Image.new("RGB", (8, 8)), {"seed": 2}, folder=str(tmp_path))  # sweeps the hour-old one
    assert not os.path.exists(old) and os.path.exists(fresh) and unrelated.exists()
    assert sweep_outputs(str(tmp_path), 3600) == 0


def test_the_output_folder_keeps_at_most_its_file_limit_newest_first(tmp_path, monkeypatch):
    import time

    from PIL import Image

    from pipelines.outputs import save_png

    monkeypatch.setenv("STUDIO_OUTPUT_MAX_FILES", "16")
    paths = []
    for index in range(20):
        paths.append(save_png(Image.new("RGB", (4, 4)), {"seed": index}, folder=str(tmp_path)))
        os.utime(paths[-1], (time.time() - 100 + index, time.time() - 100 + index))  # strictly increasing ages
    assert [os.path.exists(path) for path in paths] == [False] * 4 + [True] * 16


def test_size_sliders_start_at_a_value_they_accept(configured, monkeypatch):
    import app
    from pipelines import stable_diffusion as sd

    monkeypatch.setattr(sd, "native_size", lambda model, local_files_only=False: 32)  # a 32 px model
    width, height = app.native_size_update(configured["sd"])
    assert width["value"] == height["value"] == sd.MIN_SIZE and "native 32" in width["label"]
    assert [sd.slider_size(size) for size in (32, 64, 77, 512, 4096)] == [64, 64, 72, 512, 1024]


def test_refusals_name_the_page_label_beside_the_api_keyword(configured):
    from pipelines import stable_diffusion as sd
    from pipelines import unconditional as uncond

    with pytest.raises(ValueError, match=r'^steps must be between 1 and 1000, got 0 \("Steps" in the page\)$'):
        uncond.validate(uncond.Request(model=configured["unet"], steps=0))
    with pytest.raises(ValueError, match=r'"CLIP guidance strength" in the page'):
        uncond.validate(uncond.Request(model=configured["unet"], clip_scale=2))
    with pytest.raises(ValueError, match=r'got 9 \("Number of images" in the page\)'):
        sd.validate(sd.Request(task="txt2img", batch_size=9))


def test_erosion_equals_pils_min_filter_and_is_fast():
    import time

    import numpy as np
    from PIL import Image, ImageFilter

    from pipelines.images import eroded_mask

    values = (np.random.default_rng(0).random((40, 50)) > 0.2).astype(np.uint8) * 255
    values[5:30, 5:40] = 255
    mask = Image.fromarray(values)
    for blur in (1, 3, 6):
        expected = np.asarray(mask.filter(ImageFilter.MinFilter(2 * blur + 1)))
        assert np.array_equal(np.asarray(eroded_mask(mask, blur)), expected), blur
    started = time.perf_counter()
    eroded_mask(Image.new("L", (1024, 1024), 255), 64)
    assert time.perf_counter() - started < 10  # PIL's MinFilter(129) takes about a minute here


def test_downloads_are_named_for_what_they_are_and_zip_together(tmp_path):
    import zipfile

    from PIL import Image

    from pipelines.outputs import read_parameters, save_png, zip_outputs

    prompt = "A red Heart, glossy! 3D render of love"
    made = save_png(Image.new("RGB", (8, 8)), {"task": "txt2img", "seed": 42, "prompt": prompt}, folder=str(tmp_path))
    assert os.path.basename(made) == "txt2img-42-a-red-heart-glossy-3d-render.png"
    assert read_parameters(made)["prompt"] == prompt
    guided = save_png(Image.new("RGB", (8, 8)), {"seed": 7, "color_scale": 0.5}, folder=str(tmp_path))
    twin = save_png(Image.new("RGB", (8, 8)), {"seed": 7, "color_scale": 0.5}, folder=str(tmp_path))
    assert os.path.basename(guided) == os.path.basename(twin) == "color_guided-7.png" and guided != twin
    archive = zip_outputs([made, guided, twin], "all.zip", folder=str(tmp_path))
    with zipfile.ZipFile(archive) as opened:
        assert opened.namelist() == [
            "txt2img-42-a-red-heart-glossy-3d-render.png",
            "color_guided-7.png",
            "color_guided-7-2.png",
        ]


def test_recurrence_is_checked_and_needs_a_scheduler_that_can_retake_a_step(configured):
    from pipelines import unconditional as uncond

    model = configured["unet"]
    with pytest.raises(ValueError, match=r'^recurrence must be between 1 and 4, got 5 \("Recurrence" in the page\)$'):
        uncond.validate(uncond.Request(model=model, color="red", color_scale=1, recurrence=5))
    # A scheduler that cannot retake a step runs once per step, and says so (the CLIP tab's default is above 1).
    multistep = uncond.validate(
        uncond.Request(model=model, scheduler="DPM++ 2M", color="red", color_scale=1, recurrence=2, seed=1)
    )
    assert multistep.recurrence == 1 and uncond.request_info(multistep)["recurrence"] == 1
    assert uncond.request_info(multistep)["warnings"] == [
        "recurrence 2 needs the DDIM or DDPM scheduler: DPM++ 2M ran with recurrence 1"
    ]
    # Unguided, nothing is retaken: any scheduler, and the parameters do not mention it.
    plain = uncond.validate(uncond.Request(model=model, scheduler="DPM++ 2M", recurrence=2, seed=1))
    assert "recurrence" not in uncond.request_info(plain)
    guided = uncond.validate(uncond.Request(model=model, color="red", color_scale=1, recurrence=3, seed=1))
    assert uncond.request_info(guided)["recurrence"] == 3
    assert uncond.request_work(guided, 32).passes == 3
