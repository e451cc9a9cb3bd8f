"""The Stable Diffusion wrapper: shared weights, seeds, exact pixels outside the mask, sizes, errors, Stop."""

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines import stable_diffusion as sd
from pipelines.cache import MODELS
from pipelines.tabs import SD_TABS


def noise_image(size, mode="RGB", seed=0):
    """A random-pixel image of `size` converted to `mode`."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).convert(mode)


def box_mask(size, box):
    mask = Image.new("L", size, 0)
    mask.paste(255, box)
    return mask


def run(task, **fields):
    fields = {"prompt": "a red heart", "steps": 4, "seed": 1, **fields}
    return sd.generate(sd.Request(task=task, **fields))


def test_native_size_comes_from_the_config(configured):
    assert sd.native_size() == 64  # tiny UNet sample_size 32 x VAE factor 2
    assert run("txt2img").images[0].size == (64, 64)


def test_three_tasks_share_one_copy_of_the_weights(configured, monkeypatch):
    monkeypatch.setenv("SD_INPAINT_MODEL", configured["sd"])  # inpaint with the base model
    pipelines = [sd.build_pipeline(task, "DDIM")[0] for task in SD_TABS]
    for name in ("unet", "vae", "text_encoder"):
        assert len({id(getattr(pipeline, name)) for pipeline in pipelines}) == 1
    assert len({id(pipeline.scheduler) for pipeline in pipelines}) == 3  # each request gets its own
    result = run("inpaint", image=noise_image((64, 64)), mask=box_mask((64, 64), (8, 8, 40, 40)))
    assert result.info["model"] == configured["sd"] and MODELS.load_count == 1


def test_dedicated_inpainting_model_loads_only_when_first_used(configured):
    run("txt2img")
    run("img2img", image=noise_image((64, 64)))
    assert MODELS.load_count == 1
    run("inpaint", image=noise_image((64, 64)), mask=box_mask((64, 64), (8, 8, 40, 40)))
    assert MODELS.load_count == 2
    run("inpaint", image=noise_image((64, 64)), mask=box_mask((64, 64), (8, 8, 40, 40)))
    assert MODELS.load_count == 2


@pytest.mark.parametrize(
    "task, scheduler, fields",
    [
        ("txt2img", "Euler a", {}),
        ("txt2img", "DPM++ 2M Karras", {"guidance_scale": 1.0}),  # no CFG: one pass
        ("txt2img", "Euler SGM Uniform", {}),  # trailing timesteps, as few-step LoRAs want them
        ("img2img", "DPM++ 2M Karras", {"strength": 0.6}),
        ("img2img", "Euler", {"strength": 0.8}),
        ("inpaint", "DDIM", {"strength": 0.7, "base": True}),  # a plain 4-channel UNet: the known region put back
        ("inpaint", "Euler a", {"strength": 1.0, "base": True}),
        ("inpaint", "DPM++ 2M Karras", {"strength": 1.0}),  # a 9-channel inpainting UNet
        ("inpaint", "UniPC", {"strength": 0.5}),
    ],
)
def test_the_one_loop_gives_the_bare_pipelines_pixels(configured, monkeypatch, task, scheduler, fields):
    """With no guidance, the guided loop reproduces diffusers' own pipelines bit for bit (same seeds, scheduler)."""
    if fields.pop("base", False):
        monkeypatch.setenv("SD_INPAINT_MODEL", configured["sd"])
    if task != "txt2img":
        fields.update(image=noise_image((64, 64), seed=2), mask=box_mask((64, 64), (8, 16, 48, 56)))
    request = sd.validate(
        sd.Request(
            task=task,
            prompt="a red heart",
            negative_prompt="blurry",
            steps=5,
            batch_size=2,
            seed=5,
            scheduler=scheduler,
            mask_blur=0,
            **fields,
        )
    )
    ours = sd.generate(request)
    pipeline = sd.build_pipeline(task, scheduler)[0]
    bare = pipeline(
        prompt="a red heart",
        negative_prompt="blurry",
        num_inference_steps=5,
        guidance_scale=request.guidance_scale,
        num_images_per_prompt=2,
        generator=[torch.Generator().manual_seed(5), torch.Generator().manual_seed(6)],
        **sd._call_arguments(request),
    ).images
    for mine, theirs in zip(ours.images, bare, strict=True):
        np.testing.assert_array_equal(np.asarray(mine), np.asarray(sd._finisher(request)(theirs)))


@pytest.mark.parametrize("scheduler", list(sd.SD_SCHEDULERS))
def test_same_seed_same_pixels_for_every_scheduler(configured, scheduler):
    first = run("txt2img", scheduler=scheduler, batch_size=2, seed=9)
    again = run("txt2img", scheduler=scheduler, batch_size=2, seed=9)
    for one, two in zip(first.images, again.images):
        np.testing.assert_array_equal(np.asarray(one), np.asarray(two))
    assert [p["seed"] for p in first.image_parameters] == [9, 10]


def test_sgm_uniform_takes_timesteps_evenly_from_the_last_one_as_lightning_loras_want():
    config = {"num_train_timesteps": 1000, "timestep_spacing": "leading", "steps_offset": 1}
    scheduler = sd.SD_SCHEDULERS["Euler SGM Uniform"](config)
    scheduler.set_timesteps(4)
    assert scheduler.timesteps.tolist() == [999, 749, 499, 249]
    plain = sd.SD_SCHEDULERS["Euler"](config)
    plain.set_timesteps(4)
    assert plain.timesteps.tolist() == [751, 501, 251, 1]  # the checkpoint's own leading schedule


def test_img2img_strength_zero_returns_the_input(configured):
    image = noise_image((72, 40))
    result = run("img2img", image=image, strength=0.0, batch_size=2)
    for output in result.images:
        np.testing.assert_array_equal(np.asarray(output), np.asarray(image))
    assert result.info["denoising_steps"] == 0 and result.info["warnings"]


def test_img2img_runs_steps_times_strength_denoising_steps(configured):
    # (A random VAE cannot reconstruct an image, so closeness to the input is only testable at strength 0.)
    seen = []
    result = sd.generate(
        sd.Request(task="img2img", image=noise_image((64, 64)), strength=0.25, steps=8, seed=1),
        on_step=lambda done, total: seen.append((done, total)),
    )
    assert result.info["denoising_steps"] == 2 and seen == [(1, 2), (2, 2)]


@pytest.mark.parametrize("base_model", [False, True])
@pytest.mark.parametrize("mask_blur", [0, 6])
def test_inpainting_keeps_every_pixel_outside_the_mask(configured, monkeypatch, base_model, mask_blur):
    if base_model:
        monkeypatch.setenv("SD_INPAINT_MODEL", configured["sd"])
    image = noise_image((90, 60), seed=4)
    mask = box_mask((90, 60), (20, 10, 70, 50))
    result = run("inpaint", image=image, mask=mask, strength=1.0, mask_blur=mask_blur, batch_size=2)
    outside = np.asarray(mask) == 0
    for output in result.images:
        assert output.size == (90, 60)
        np.testing.assert_array_equal(np.asarray(output)[outside], np.asarray(image)[outside])
        assert not np.array_equal(np.asarray(output)[~outside], np.asarray(image)[~outside])


def test_inpaint_mask_of_another_size_is_stretched(configured):
    image = noise_image((80, 48), seed=5)
    small_mask = box_mask((40, 24), (0, 0, 20, 24))  # left half, at half the size
    result = run("inpaint", image=image, mask=small_mask)
    output = np.asarray(result.images[0])
    np.testing.assert_array_equal(output[:, 40:], np.asarray(image)[:, 40:])


@pytest.mark.parametrize(
    "size, mode", [((100, 70), "RGBA"), ((33, 17), "L"), ((130, 90), "P"), ((64, 200), "CMYK"), ((1100, 60), "RGB")]
)
def test_odd_sizes_and_modes_come_back_at_their_size(configured, size, mode):
    image = noise_image(size, mode)
    assert run("img2img", image=image, strength=0.5, steps=2).images[0].size == size  # one step: sizes only
    if max(size) > 1024:
        return  # inpainting resizes the same way; at 1024x64 the tiny VAE's attention costs 6 s more a run
    mask = box_mask(size, (0, 0, size[0] // 2, size[1] // 2))
    assert run("inpaint", image=image, mask=mask, steps=2).images[0].size == size


@pytest.mark.parametrize(
    "task, fields, message",
    [
        ("txt2img", {"width": 13}, "width must be"),
        ("txt2img", {"height": 100}, "height must be a multiple of 8 from 64 to 1024, got 100"),
        ("txt2img", {"steps": 0}, "steps must be between 1 and 150, got 0"),
        ("txt2img", {"guidance_scale": -1}, "guidance_scale must be between 0 and 30"),
        ("txt2img", {"batch_size": 5}, "batch_size must be between 1 and 4, got 5"),
        ("txt2img", {"scheduler": "LMS"}, "scheduler 'LMS'"),
        ("img2img", {"image": None}, "image is empty"),
        ("img2img", {"strength": 1.5}, "strength must be between 0 and 1, got 1.5"),
        ("inpaint", {"mask": None}, "mask is empty"),
        ("inpaint", {"outpaint_left": 12}, "outpaint_left must be a multiple of 8 from 0 to 512, got 12"),
        ("inpaint", {"outpaint_bottom": 520}, "outpaint_bottom must be between 0 and 512, got 520"),
    ],
)
def test_bad_input_is_a_named_error(configured, task, fields, message):
    if task != "txt2img":
        fields = {"image": noise_image((64, 64)), "mask": box_mask((64, 64), (0, 0, 8, 8)), **fields}
    with pytest.raises(ValueError, match=message):
        run(task, **fields)


@pytest.mark.parametrize("base_model", [False, True])
def test_outpainting_grows_the_canvas_and_keeps_every_original_pixel(configured, monkeypatch, base_model):
    if base_model:
        monkeypatch.setenv("SD_INPAINT_MODEL", configured["sd"])
    image = noise_image((50, 40), seed=6)
    margins = dict(outpaint_left=16, outpaint_right=0, outpaint_top=8, outpaint_bottom=24)
    result = run("inpaint", image=image, mask=None, strength=1.0, steps=2, mask_blur=4, **margins)
    output = np.asarray(result.images[0])
    assert result.images[0].size == (66, 72)
    np.testing.assert_array_equal(output[8:48, 16:66], np.asarray(image))
    checked = sd.validate(sd.Request(task="inpaint", image=image, seed=1, **margins))
    again = sd.validate(checked)  # the app validates, then the pipeline does: the canvas must not grow twice
    assert again.image.size == checked.image.size == (66, 72) and again.mask.tobytes() == checked.mask.tobytes()
    pre_filled = np.asarray(checked.image)
    new_area = np.asarray(checked.mask) == 255
    assert new_area.sum() == 66 * 72 - 50 * 40 and not np.array_equal(output[new_area], pre_filled[new_area])
    assert result.info["input_size"] == [50, 40] and result.info["outpaint_bottom"] == 24


def test_outpainting_also_repaints_what_is_painted_on_the_original(configured):
    image = noise_image((48, 48), seed=7)
    mask = box_mask((48, 48), (0, 0, 16, 16))
    result = run("inpaint", image=image, mask=mask, steps=2, mask_blur=0, outpaint_right=16)
    output = np.asarray(result.images[0])
    assert result.images[0].size == (64, 48)
    kept = np.asarray(mask) == 0
    np.testing.assert_array_equal(output[:, :48][kept], np.asarray(image)[kept])
    assert not np.array_equal(output[:16, :16], np.asarray(image)[:16, :16])


def test_a_long_prompt_is_read_whole_in_chunks_without_a_truncation_warning(configured):
    result = run("txt2img", prompt="a very red heart " * 30)  # 122 tokens with start and end
    assert result.info["prompt_reading"] == "2 chunks of up to 75 tokens" and result.info["warnings"] == []
    plain = run("txt2img")
    assert plain.info["warnings"] == [] and plain.info["prompt_reading"] == "plain"


def test_stop_interrupts_within_one_step(configured):
    seen = []
    result = sd.generate(
        sd.Request(task="txt2img", prompt="x", steps=30, seed=1),
        on_step=lambda done, total: seen.append((done, total)),
        should_stop=lambda: len(seen) >= 2,
    )
    assert seen[:2] == [(1, 30), (2, 30)]
    assert result.info["interrupted"] and result.info["stopped_after_step"] == 2
    assert len(seen) <= 3  # diffusers skips the remaining steps without calling back for them


def test_color_keywords_at_strength_zero_change_nothing(configured):
    plain = run("txt2img", batch_size=2)
    explicit = run("txt2img", batch_size=2, color="#00ff00", color_scale=0.0, color_decoder="cheap")
    for one, two in zip(plain.images, explicit.images, strict=True):
        np.testing.assert_array_equal(np.asarray(one), np.asarray(two))
    assert "color" not in explicit.info and "color_decoder" not in explicit.info


@pytest.mark.parametrize("decoder, named", [("cheap", "cheap: linear latent-to-RGB map (ComfyUI"), ("vae", "vae")])
def test_color_guidance_moves_the_images_through_either_decoder(configured, decoder, named):
    plain = run("txt2img", seed=3)
    guided = run("txt2img", seed=3, color="#0000ff", color_scale=2.0, color_decoder=decoder)
    assert guided.info["color"] == "#0000ff" and guided.info["color_decoder"].startswith(named)
    assert not np.array_equal(np.asarray(plain.images[0]), np.asarray(guided.images[0]))


def test_inpainting_color_guidance_keeps_every_pixel_outside_the_mask(configured):
    image = noise_image((64, 64), seed=8)
    mask = box_mask((64, 64), (16, 16, 48, 48))
    plain = run("inpaint", image=image, mask=mask, mask_blur=0)
    guided = run("inpaint", image=image, mask=mask, mask_blur=0, color="#ff0000", color_scale=3.0)
    outside = np.asarray(mask) == 0
    np.testing.assert_array_equal(np.asarray(guided.images[0])[outside], np.asarray(image)[outside])
    assert not np.array_equal(np.asarray(guided.images[0])[~outside], np.asarray(plain.images[0])[~outside])


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"color": "", "color_scale": 1.0}, "color is empty but color_scale is above 0"),
        ({"color": "nope", "color_scale": 1.0}, "color 'nope' is not a color"),
        ({"color": "red", "color_scale": 11}, "color_scale must be between 0 and 10, got 11"),
        ({"color_decoder": "approx"}, "color_decoder 'approx'"),
    ],
)
def test_bad_color_guidance_input_is_a_named_error(configured, fields, message):
    with pytest.raises(ValueError, match=message):
        run("txt2img", **fields)


def test_clip_guidance_moves_the_images_and_is_recorded(configured):
    plain = run("txt2img", seed=3)
    guided = run("txt2img", seed=3, clip_prompt="a cat", clip_scale=4.0, cuts=2)
    assert guided.info["clip_prompt"] == "a cat" and guided.info["cuts"] == 2
    assert guided.info["clip_model"] == configured["clip"]
    assert not np.array_equal(np.asarray(plain.images[0]), np.asarray(guided.images[0]))
    with pytest.raises(ValueError, match="clip_prompt is empty but clip_scale is above 0"):
        run("txt2img", clip_scale=1.0)


def test_inpainting_clip_guidance_keeps_every_pixel_outside_the_mask(configured):
    image = noise_image((64, 64), seed=9)
    mask = box_mask((64, 64), (0, 0, 32, 64))
    guided = run("inpaint", image=image, mask=mask, mask_blur=0, clip_prompt="a cat", clip_scale=4.0, cuts=2)
    outside = np.asarray(mask) == 0
    np.testing.assert_array_equal(np.asarray(guided.images[0])[outside], np.asarray(image)[outside])


def test_clip_guidance_toward_a_reference_picture_moves_the_images_and_is_recorded(configured):
    reference = noise_image((80, 48), seed=11)
    plain = run("txt2img", seed=3)
    guided = run("txt2img", seed=3, clip_image=reference, clip_image_scale=4.0, cuts=2)
    assert guided.info["clip_image_scale"] == 4.0 and guided.info["clip_image"].startswith("80x48 sha256:")
    assert "clip_prompt" not in guided.info and guided.info["clip_model"] == configured["clip"]
    assert not np.array_equal(np.asarray(plain.images[0]), np.asarray(guided.images[0]))
    again = run("txt2img", seed=3, clip_image=reference.copy(), clip_image_scale=4.0, cuts=2)
    np.testing.assert_array_equal(np.asarray(guided.images[0]), np.asarray(again.images[0]))
    # Text and picture together: one term whose strength is their sum, a mix of both directions.
    both = run("txt2img", seed=3, clip_prompt="a cat", clip_scale=4.0, clip_image=reference, clip_image_scale=4.0)
    assert both.info["clip_prompt"] == "a cat" and both.info["clip_image_scale"] == 4.0
    # Strength 0 ignores an uploaded picture: today's images, today's parameters.
    ignored = run("txt2img", seed=3, clip_image=reference, clip_image_scale=0.0)
    np.testing.assert_array_equal(np.asarray(plain.images[0]), np.asarray(ignored.images[0]))
    assert "clip_image" not in ignored.info and "cuts" not in ignored.info


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"clip_image_scale": 1.0}, r'clip_image is empty but clip_image_scale is above 0.*"Reference image"'),
        ({"clip_image_scale": 21}, "clip_image_scale must be between 0 and 20, got 21"),
    ],
)
def test_bad_reference_guidance_input_is_a_named_error(configured, fields, message):
    with pytest.raises(ValueError, match=message):
        run("txt2img", **fields)


def test_inpainting_reference_guidance_keeps_every_pixel_outside_the_mask(configured):
    image = noise_image((64, 64), seed=12)
    mask = box_mask((64, 64), (8, 8, 40, 56))
    reference = noise_image((64, 64), seed=13)
    guided = run("inpaint", image=image, mask=mask, mask_blur=0, clip_image=reference, clip_image_scale=4.0, cuts=2)
    outside = np.asarray(mask) == 0
    np.testing.assert_array_equal(np.asarray(guided.images[0])[outside], np.asarray(image)[outside])


@pytest.mark.parametrize(
    "native, preset, size",
    [
        (512, "square", (512, 512)),
        (512, "portrait", (512, 768)),
        (512, "landscape", (768, 512)),
        (64, "portrait", (64, 96)),
        (32, "landscape", (96, 64)),
        (768, "portrait", (768, 1024)),
    ],
)
def test_size_presets_keep_the_native_short_side_at_two_to_three(native, preset, size):
    assert sd.preset_size(native, preset) == size
