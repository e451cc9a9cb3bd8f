"""Live previews: when they come, what they show (x0 for pixel models, the cheap latent map for Stable Diffusion),
that they never change the final images, and that they cross the ZeroGPU process boundary."""

import numpy as np
import pytest
import torch

from pipelines import budget
from pipelines import previews as previews_module
from pipelines import stable_diffusion as sd
from pipelines import unconditional as uncond
from pipelines.gpu import _simulated
from pipelines.jobs import Preview, StepDone, run_steps, stream_job
from pipelines.previews import PreviewClock, pixel_previews


@pytest.fixture()
def every_step(monkeypatch):
    """Previews after every step (the server default spaces them by 3 steps and 1 s)."""
    monkeypatch.setenv(previews_module.PREVIEW_STEPS_ENV, "1")
    monkeypatch.setenv(previews_module.PREVIEW_SECONDS_ENV, "0")


def test_a_preview_is_due_after_enough_steps_and_seconds_never_on_the_last_step():
    clock = PreviewClock(min_steps=3, min_seconds=1.0, last_time=100.0)
    assert not clock.due(3, 50, now=100.0)  # three steps, but no time has passed
    assert not clock.due(4, 50, now=100.5)
    assert clock.due(5, 50, now=101.1)  # 1.1 s and 5 steps since the start
    assert not clock.due(7, 50, now=106.0)  # 5 s, but only 2 steps since the last preview: the rarer wins
    assert clock.due(8, 50, now=106.0)
    assert not clock.due(9, 50, now=106.5)  # 1 step and 0.5 s
    assert not clock.due(50, 50, now=200.0)  # the final images show the last step


def test_the_server_spacing_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv(previews_module.PREVIEW_STEPS_ENV, "5")
    monkeypatch.setenv(previews_module.PREVIEW_SECONDS_ENV, "0.25")
    clock = previews_module.preview_clock()
    assert (clock.min_steps, clock.min_seconds) == (5, 0.25)
    monkeypatch.setenv(previews_module.PREVIEW_STEPS_ENV, "0")  # at least every step, never "every 0 steps"
    assert previews_module.preview_clock().min_steps == 1


def test_pixel_previews_show_each_steps_x0_and_leave_the_final_images_unchanged(configured, every_step, monkeypatch):
    request = uncond.Request(model=configured["unet"], steps=5, batch_size=2, seed=4)
    predicted = []
    original = uncond.guided_sample

    def recording(*args, callback=None, **kwargs):
        def spy(step, steps, predicted_x0):
            predicted.append(predicted_x0.clone())
            callback(step, steps, predicted_x0)

        return original(*args, callback=spy, **kwargs)

    monkeypatch.setattr(uncond, "guided_sample", recording)
    shown = []
    with_previews = uncond.generate(request, on_preview=lambda done, total, images: shown.append((done, total, images)))
    assert [(done, total) for done, total, _ in shown] == [(1, 5), (2, 5), (3, 5), (4, 5)]
    for (_, _, images), x0 in zip(shown, predicted):
        assert len(images) == 2 and images[0].size == with_previews.images[0].size  # enlarged as the results are
        for image, expected in zip(images, pixel_previews(x0), strict=True):
            np.testing.assert_array_equal(np.asarray(image), np.asarray(expected))
    without = uncond.generate(request)
    for one, two in zip(with_previews.images, without.images, strict=True):
        np.testing.assert_array_equal(np.asarray(one), np.asarray(two))


@pytest.mark.parametrize("task", ["txt2img", "inpaint"])
def test_sd_previews_come_through_the_cheap_map_at_the_result_size_never_the_vae(configured, every_step, task):
    from PIL import Image

    fields = dict(task=task, prompt="a red heart", steps=6, seed=2, batch_size=2)
    if task == "inpaint":
        mask = Image.new("L", (64, 48), 0)
        mask.paste(255, (8, 8, 40, 40))
        fields.update(image=Image.new("RGB", (64, 48), "white"), mask=mask)
    pipeline = sd.build_pipeline(task, "DPM++ 2M Karras")[0]
    decodes = []
    hook = pipeline.vae.decoder.register_forward_hook(lambda *args: decodes.append(1))
    try:
        shown = []
        result = sd.generate(sd.Request(**fields), on_preview=lambda *event: shown.append(event))
    finally:
        hook.remove()
    assert len(decodes) == 1  # the final decode only: previews cost no VAE pass
    steps = sd.denoising_steps(sd.validate(sd.Request(**fields)))
    assert [done for done, _, _ in shown] == list(range(1, steps))
    size = (result.info.get("width") or result.info["working_size"][0], result.info.get("height"))
    size = (size[0], size[1] or result.info["working_size"][1])
    assert all(len(images) == 2 and images[0].size == size for _, _, images in shown)
    assert shown[-1][2][0].getextrema() != shown[0][2][0].getextrema()  # the picture forms as it samples
    plain = sd.generate(sd.Request(**fields))
    for one, two in zip(result.images, plain.images, strict=True):
        np.testing.assert_array_equal(np.asarray(one), np.asarray(two))


def test_previews_are_streamed_as_events_and_skipped_by_run_steps(configured, every_step):
    request = uncond.validate(uncond.Request(model=configured["unet"], steps=4, seed=6))
    events = list(stream_job(uncond.generate, request, previews=True))
    kinds = [type(event).__name__ for event in events]
    assert kinds[:-1] == ["StepDone", "Preview"] * 3 + ["StepDone"] and kinds[-1] == "GenerationResult"
    quiet = list(stream_job(uncond.generate, request))
    assert not any(isinstance(event, Preview) for event in quiet)
    final = run_steps(iter(events))
    np.testing.assert_array_equal(np.asarray(final.images[0]), np.asarray(quiet[-1].images[0]))


def test_previews_cross_the_zero_gpu_process_boundary(configured, every_step):
    request = sd.validate(sd.Request(task="txt2img", prompt="a cat", steps=4, seed=8))
    events = list(_simulated(sd.generate_steps, budget.sd_seconds)(request, None, True))
    previews = [event for event in events if isinstance(event, Preview)]
    assert [event.done for event in previews] == [1, 2, 3]
    assert previews[0].images[0].size == (request.width, request.height)
    assert sum(isinstance(event, StepDone) for event in events) == 4


def test_a_latent_model_without_a_cheap_map_shows_no_previews(configured, every_step, monkeypatch):
    monkeypatch.setattr(sd, "latent_rgb_for", lambda folder, config: None)
    shown = []
    result = sd.generate(sd.Request(task="txt2img", prompt="a cat", steps=4, seed=8), on_preview=shown.append)
    assert shown == [] and len(result.images) == 1


def test_latent_previews_apply_the_map_then_upscale():
    from guidance.latent_rgb import LatentRGB

    factors = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (0.0, 0.0, 0.0))
    latent_rgb = LatentRGB(factors, (0.0, 0.0, 0.0), "identity on the first three channels")
    latents = torch.zeros(1, 4, 2, 2)
    latents[0, 0] = 1.0  # red everywhere
    (image,) = previews_module.latent_previews(latents, latent_rgb, (16, 8))
    assert image.size == (16, 8) and np.asarray(image)[3, 5].tolist() == [255, 128, 128]
