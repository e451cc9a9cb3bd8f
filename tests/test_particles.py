"""Particles with resampling (guidance.particles): the scores, the draws, the loop's use of them, and the keyword in
the pixel and Stable Diffusion tabs (reproduced by seed, one particle is the plain run, Stop, validation, PNG)."""

import numpy as np
import pytest
import torch
from diffusers import DPMSolverMultistepScheduler

from guidance import ColorLoss, GuidanceTerm, guided_sample
from guidance.particles import Particles, best, reindex_scheduler, resample, scores
from pipelines import stable_diffusion as sd
from pipelines import unconditional as uncond
from pipelines.infotext import infotext, parse_infotext, request_values
from pipelines.limits import Work
from pipelines.seeds import seeded_generators
from tests.tiny_models import tiny_scheduler, tiny_unet


def test_scores_are_scale_free_and_mixed_by_strength():
    color = torch.tensor([1.0, 3.0, 2.0, 5.0, 5.0, 5.0])
    clip = torch.tensor([0.3, 0.1, 0.2, 0.9, 0.1, 0.5])
    alone = scores([color], [1.0], 3)
    np.testing.assert_allclose(scores([color * 100 + 7], [1.0], 3), alone)  # units and offsets do not matter
    assert alone[:3].argmax() == 0 and alone[3:].abs().max() == 0  # lower loss scores higher; ties add nothing
    np.testing.assert_allclose(alone[:3].sum(), 0, atol=1e-12)  # standardised within each image's particles
    mixed = scores([color, clip], [3.0, 1.0], 3)
    np.testing.assert_allclose(mixed, 0.75 * alone + 0.25 * scores([clip], [1.0], 3))


def test_resampling_draws_within_each_image_from_its_own_generator():
    score = torch.tensor([0.0, 0.0, 9.0, -9.0, 9.0, 0.0])  # two images of three particles

    def draw(seeds):
        return resample(score, Particles(3, [torch.Generator().manual_seed(seed) for seed in seeds], sharpness=5))

    first = draw([1, 2])
    assert set(first[:3].tolist()) == {2} and set(first[3:].tolist()) == {4}  # all mass on the best particle
    np.testing.assert_array_equal(draw([1, 2]), first)
    even = resample(torch.zeros(8), Particles(4, [torch.Generator().manual_seed(0) for _ in range(2)]))
    assert set(even[:4].tolist()) <= {0, 1, 2, 3} and set(even[4:].tolist()) <= {4, 5, 6, 7}
    assert best(torch.tensor([0.1, 0.5, 0.5, -1.0, -2.0, -3.0]), 3).tolist() == [1, 3]


def test_a_multistep_schedulers_history_follows_the_resampling():
    scheduler = DPMSolverMultistepScheduler(num_train_timesteps=1000)
    scheduler.set_timesteps(4)
    sample = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 3, 2, 2).clone()
    scheduler.step(sample * 2, scheduler.timesteps[0], sample)
    rows = torch.tensor([3, 3, 0, 1])
    before = [output.clone() for output in scheduler.model_outputs if output is not None]
    reindex_scheduler(scheduler, rows, sample.shape)
    after = [output for output in scheduler.model_outputs if output is not None]
    assert len(after) == len(before) == 1
    np.testing.assert_array_equal(after[0], before[0][rows])
    assert scheduler.sigmas.shape == (5,)  # what is not per-sample state is left alone


def _color_run(count: int, seeds: list[int]) -> torch.Tensor:
    """Tiny-UNet images of `seeds` pulled toward red, each run as `count` particles."""
    unet, red = tiny_unet(), (1.0, 0.0, 0.0)
    generators = seeded_generators(seeds[0], len(seeds), particles=count)
    noise = torch.cat([torch.randn((1, 3, 32, 32), generator=generator) for generator in generators])
    particles = Particles(count, seeded_generators(seeds[0], len(seeds), 99)) if count > 1 else None
    term = GuidanceTerm("color", ColorLoss(red), 0.5)
    return guided_sample(unet, tiny_scheduler(), noise, 10, [term], generator=generators, eta=1.0, particles=particles)


def test_particles_pull_further_toward_what_guidance_asks():
    seeds = list(range(20, 26))
    red = ColorLoss((1.0, 0.0, 0.0))
    plain, steered = _color_run(1, seeds), _color_run(4, seeds)
    assert steered.shape == plain.shape == (6, 3, 32, 32)
    lower = red(steered) < red(plain)
    assert lower.sum() >= 5 and red(steered).mean() < red(plain).mean()  # (the tiny UNet's images are noise-like)


def pixel(configured, **fields):
    base = dict(model=configured["unet"], steps=6, seed=11, prompt="a red heart", clip_scale=3, cuts=2)
    return uncond.generate(uncond.Request(**{**base, **fields}))


def test_one_particle_is_the_plain_run_and_more_reproduce_by_seed(configured):
    plain = pixel(configured, batch_size=2)
    one = pixel(configured, batch_size=2, particles=1)
    for a, b in zip(plain.images, one.images, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert "particles" not in one.info  # a plain run records what it always did
    three = pixel(configured, batch_size=2, particles=3)
    again = pixel(configured, batch_size=2, particles=3)
    assert len(three.images) == 2 and three.info["particles"] == 3
    for a, b in zip(three.images, again.images, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert any(not np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(three.images, plain.images))
    alone = pixel(configured, seed=12, particles=3)  # the second image's seed, alone
    difference = np.abs(np.asarray(alone.images[0]).astype(int) - np.asarray(three.images[1]).astype(int))
    assert difference.max() <= 1 and (difference > 0).mean() < 0.01  # (batch kernels may differ by one level)


def test_particles_stop_mid_run_with_one_image_per_seed(configured):
    seen = []
    result = uncond.generate(
        uncond.Request(
            model=configured["unet"], steps=20, seed=3, batch_size=2, color="red", color_scale=1, particles=4
        ),
        on_step=lambda done, total: seen.append(done),
        should_stop=lambda: len(seen) >= 7,  # after a resampling (every 5 steps)
    )
    assert result.info["interrupted"] and result.info["stopped_after_step"] == 7 and len(result.images) == 2


def test_particles_without_guidance_run_once_with_a_warning(configured):
    result = pixel(configured, clip_scale=0, prompt="", particles=3)
    plain = pixel(configured, clip_scale=0, prompt="")
    np.testing.assert_array_equal(np.asarray(result.images[0]), np.asarray(plain.images[0]))
    assert any("particles 3 need guidance" in warning for warning in result.info["warnings"])


@pytest.mark.parametrize("value, message", [(0, "between 1 and 4, got 0"), (5, "got 5"), (2.5, "integer, got 2.5")])
def test_the_keyword_is_validated(configured, value, message):
    with pytest.raises(ValueError, match=f"particles must be .*{message}"):
        uncond.validate(uncond.Request(model=configured["unet"], particles=value, color_scale=1))
    with pytest.raises(ValueError, match=f"particles must be .*{message}"):
        sd.validate(sd.Request(task="txt2img", prompt="x", particles=value, color_scale=1))


def test_particles_count_in_the_compute_limits():
    plain, four = Work(10, 2, 64, 64, cuts=4), Work(10, 2, 64, 64, cuts=4, particles=4)
    assert four.megapixel_steps == 4 * plain.megapixel_steps and four.cutout_steps == 4 * plain.cutout_steps
    assert "particles 4" in four.describe()


def test_the_png_records_particles_and_reads_them_back(configured):
    result = pixel(configured, particles=2)
    text = infotext(result.image_parameters[0], result.images[0].size)
    assert "Particles: 2" in text
    assert request_values(parse_infotext(text))[1]["particles"] == 2
    plain = pixel(configured)
    assert (
        request_values(parse_infotext(infotext(plain.image_parameters[0], plain.images[0].size)))[1]["particles"] == 1
    )
    assert request_values(parse_infotext("a cat\nSteps: 20, Sampler: Euler a"))[1]["particles"] == 1


@pytest.mark.parametrize("task", ["txt2img", "inpaint"])
def test_stable_diffusion_runs_particles_on_its_multistep_scheduler(configured, task):
    from tests.test_stable_diffusion import box_mask, noise_image

    fields = dict(prompt="a red heart", steps=6, seed=2, batch_size=2, color="#ff0000", color_scale=3)
    if task == "inpaint":
        fields.update(image=noise_image((64, 64)), mask=box_mask((64, 64), (16, 16, 48, 48)), mask_blur=0)
    plain = sd.generate(sd.Request(task=task, **fields))
    steered = sd.generate(sd.Request(task=task, particles=3, **fields))
    assert len(steered.images) == 2 and steered.info["particles"] == 3 and "particles" not in plain.info
    if task == "txt2img":  # a seed reproduces it (the history of DPM++ 2M follows the draws)
        again = sd.generate(sd.Request(task=task, particles=3, **fields))
        for a, b in zip(steered.images, again.images, strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(steered.images[0]), np.asarray(plain.images[0]))
    assert "Particles: 3" in infotext(steered.image_parameters[0], steered.images[0].size)
