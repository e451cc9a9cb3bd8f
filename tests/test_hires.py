"""txt2img's hires fix: the first image enlarged (latents or Lanczos) and repainted at the larger size with its own
steps and strength, guidance in both passes, recorded in the PNG as stable-diffusion-webui records it; Stop works in
both passes."""

import numpy as np
import pytest

from pipelines import stable_diffusion as sd


def run(**fields):
    values = dict(task="txt2img", prompt="a red heart", steps=4, seed=3, scheduler="DDIM", hires_scale=1.5)
    return sd.generate(sd.Request(**(values | fields)))


@pytest.mark.parametrize("upscaler", ["Latent", "Lanczos"])
def test_the_hires_fix_makes_the_larger_image_in_two_passes(configured, upscaler):
    seen = []
    result = sd.generate(
        sd.Request(task="txt2img", prompt="a red heart", steps=4, seed=3, scheduler="DDIM", hires_scale=1.5,
                   hires_upscaler=upscaler, hires_steps=6, strength=0.5, batch_size=2),
        on_step=lambda done, total: seen.append((done, total)),
    )  # fmt: skip
    assert [image.size for image in result.images] == [(96, 96)] * 2
    assert seen == [(step, 7) for step in range(1, 8)]  # 4 steps, then 0.5 x 6 = 3
    info = result.info
    assert (info["hires_scale"], info["hires_upscaler"], info["hires_steps"], info["strength"]) == (
        1.5,
        upscaler,
        6,
        0.5,
    )
    assert info["output_size"] == [96, 96] and (info["width"], info["height"]) == (64, 64)
    again = run(hires_upscaler=upscaler, hires_steps=6, strength=0.5, batch_size=2)
    for one, two in zip(result.images, again.images):
        np.testing.assert_array_equal(np.asarray(one), np.asarray(two))


def test_the_hires_keys_go_into_the_png_and_read_back(configured):
    from pipelines.infotext import infotext, parse_infotext, request_values

    result = run(hires_scale=2.0, hires_steps=5, strength=0.6, hires_upscaler="Lanczos")
    text = infotext(result.image_parameters[0], result.images[0].size)
    for key in ("Hires upscale: 2", "Hires steps: 5", "Hires upscaler: Lanczos", "Denoising strength: 0.6"):
        assert key in text, text
    task, values, skipped = request_values(parse_infotext(text))
    assert task == "txt2img" and not skipped
    assert (values["hires_scale"], values["hires_steps"], values["hires_upscaler"], values["strength"]) == (
        2.0, 5, "Lanczos", 0.6
    )  # fmt: skip
    plain = run(hires_scale=1.0)
    assert "Hires" not in infotext(plain.image_parameters[0], (64, 64)) and plain.images[0].size == (64, 64)
    assert request_values(parse_infotext(infotext(plain.image_parameters[0], (64, 64))))[1]["hires_scale"] == 1.0


def test_guidance_acts_in_both_passes_and_stop_works_in_the_second(configured):
    plain, guided = run(), run(color="#0000ff", color_scale=2.0)
    assert not np.array_equal(np.asarray(plain.images[0]), np.asarray(guided.images[0]))
    seen = []
    stopped = sd.generate(
        sd.Request(task="txt2img", prompt="x", steps=4, seed=1, scheduler="DDIM", hires_scale=2.0, strength=1.0),
        on_step=lambda done, total: seen.append(done),
        should_stop=lambda: len(seen) >= 6,  # two steps into the second pass
    )
    assert stopped.info["interrupted"] and stopped.info["stopped_after_step"] == 6
    assert stopped.info["total_steps"] == 8 and stopped.images[0].size == (128, 128)


def test_the_pixel_limit_applies_at_the_hires_size(configured, monkeypatch):
    monkeypatch.setenv("STUDIO_MAX_PIXELS", str(96 * 96))
    assert sd.validate(sd.Request(task="txt2img", prompt="x", hires_scale=1.5)).hires_scale == 1.5  # 96 x 96
    with pytest.raises(ValueError, match="the hires fix's output 128x128 px is above"):
        sd.validate(sd.Request(task="txt2img", prompt="x", hires_scale=2.0))


def test_another_tools_hires_upscaler_is_named_as_not_offered():
    from ui.png_info import usable_values

    not_used: list[str] = []
    usable = usable_values({"hires_upscaler": "R-ESRGAN 4x+", "hires_scale": 2.0, "clip_method": "data set"}, not_used)
    assert usable == {"hires_scale": 2.0, "clip_method": "data set"}
    assert not_used == ["hires_upscaler: 'R-ESRGAN 4x+' is not offered (one of Latent, Lanczos)"]
