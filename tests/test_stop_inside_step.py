"""Stop inside a long step: between the blocks of the UNet, the CLIP (forward and backward) and the SD models, with
the images of the last completed step; the checks change no value and act only in the thread that asked."""

import contextlib
import threading

import numpy as np
import pytest
import torch
from diffusers.utils.torch_utils import randn_tensor

from guidance import ClipLoss, GuidanceTerm, SamplingInterrupted, StopRequested, guided_sample, stop_checks
from guidance.interrupt import checked_blocks
from pipelines import stable_diffusion as sd
from pipelines import unconditional as uncond
from pipelines.unconditional import make_scheduler, seeded_generators
from tests.tiny_models import tiny_clip, tiny_scheduler, tiny_unet


@pytest.fixture(scope="module")
def unet():
    return tiny_unet()


@contextlib.contextmanager
def counting(module: torch.nn.Module, counts: dict, name: str, after: bool = False):
    """Count entries into (or, with `after`, exits from) `module` under `counts[name]`."""
    counts.setdefault(name, 0)

    def bump(*_):
        counts[name] += 1

    handle = module.register_forward_hook(bump) if after else module.register_forward_pre_hook(bump)
    try:
        yield
    finally:
        handle.remove()


def run(unet, terms=(), callback=None, steps=6):
    generators = [torch.Generator().manual_seed(seed) for seed in (3, 4)]
    noise = randn_tensor((2, 3, 32, 32), generator=generators, dtype=torch.float32)
    scheduler = make_scheduler("DDIM", tiny_scheduler().config)
    return guided_sample(unet, scheduler, noise, steps, list(terms), generator=generators, callback=callback)


def no_hooks(*models) -> bool:
    return all(not module._forward_pre_hooks for model in models for module in model.modules())


def test_a_stop_inside_the_unet_ends_the_run_with_the_last_completed_step(unet):
    shown, counts = [], {}
    # Step 3 is stopped inside the UNet: after its down blocks, before its mid block's first layer.
    should_stop = lambda: len(shown) >= 2 and counts["mid"] > 2  # noqa: E731
    with counting(unet.mid_block, counts, "mid"), counting(unet.up_blocks[0], counts, "up"):
        with stop_checks([unet], should_stop), pytest.raises(SamplingInterrupted) as stop:
            run(unet, callback=lambda index, total, predicted_x0: shown.append(predicted_x0.clone()))
    assert stop.value.step == 2 and torch.equal(stop.value.predicted_x0, shown[1])
    assert counts == {"mid": 3, "up": 2}  # step 3 never reached its up blocks
    assert no_hooks(unet)


def test_a_stop_before_the_first_step_shows_the_noise(unet):
    with stop_checks([unet], lambda: True), pytest.raises(SamplingInterrupted) as stop:
        run(unet)
    assert stop.value.step == 0 and stop.value.predicted_x0.abs().max() <= 1


def test_the_checks_change_no_value_and_leave_no_hook(unet):
    clip = tiny_clip()
    text = torch.randn(1, 32, generator=torch.Generator().manual_seed(7))

    def terms():
        loss = ClipLoss(clip, text, 4, seeded_generators(3, 2, 99), 64, (0.5,) * 3, (0.5,) * 3)
        return [GuidanceTerm("clip", loss, 2.0)]

    plain = run(unet, terms())
    with stop_checks([unet, clip], lambda: False):
        checked = run(unet, terms())
    assert torch.equal(plain, checked) and no_hooks(unet, clip)
    assert len(checked_blocks(unet)) > 10 and len(checked_blocks(clip)) > 1


def test_a_stop_during_the_guidance_backward_pass_drops_that_step(unet):
    """CLIP guidance: the stop comes after step 2's CLIP forward; the backward pass through the CLIP ends it."""
    clip = tiny_clip()
    text = torch.randn(1, 32, generator=torch.Generator().manual_seed(7))
    loss = ClipLoss(clip, text, 8, seeded_generators(3, 2, 99), 64, (0.5,) * 3, (0.5,) * 3)
    shown, counts, armed = [], {}, []
    clip.visual.register_forward_hook(lambda *_: armed.append(len(shown) >= 1))
    with counting(unet, counts, "unet"), stop_checks([unet, clip], lambda: any(armed)):
        with pytest.raises(SamplingInterrupted) as stop:
            run(unet, [GuidanceTerm("clip", loss, 2.0)], lambda i, n, x0: shown.append(x0.clone()))
    assert stop.value.step == 1 and torch.equal(stop.value.predicted_x0, shown[0])
    assert counts["unet"] == 2  # step 2's UNet ran; its CLIP backward pass was where it stopped, not step 3


def test_checks_act_only_in_the_thread_that_installed_them(unet):
    sample = torch.zeros(1, 3, 32, 32)
    results = []
    with stop_checks([unet], lambda: True):
        worker = threading.Thread(target=lambda: results.append(unet(sample, 10).sample.shape))
        worker.start()
        worker.join()
        with pytest.raises(StopRequested):
            unet(sample, 10)
    assert results == [(1, 3, 32, 32)]


def test_unconditional_stop_inside_a_step_equals_a_stop_after_the_step_before(configured):
    request = uncond.Request(model=configured["unet"], steps=8, batch_size=2, seed=11)
    model = uncond.get_unconditional(configured["unet"])
    steps = []
    after_two = uncond.generate(request, on_step=lambda d, t: steps.append(d), should_stop=lambda: len(steps) >= 2)
    steps.clear()
    counts = {}
    with counting(model.unet.mid_block, counts, "mid"):
        inside = uncond.generate(request, on_step=lambda d, t: steps.append(d), should_stop=lambda: counts["mid"] > 2)
    assert steps == [1, 2]
    assert inside.info["interrupted"] is True
    assert inside.info["stopped_after_step"] == after_two.info["stopped_after_step"] == 2
    assert inside.info["total_steps"] == 8
    for ours, theirs in zip(inside.images, after_two.images, strict=True):
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))


@pytest.mark.parametrize("task", ["txt2img", "inpaint"])
def test_sd_stop_inside_a_step_equals_a_stop_after_the_step_before(configured, task):
    fields = dict(task=task, prompt="a red heart", steps=8, seed=2, batch_size=2, scheduler="DDIM")
    if task == "inpaint":
        image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
        mask = np.zeros((64, 64), dtype=np.uint8)
        mask[16:48, 16:48] = 255
        from PIL import Image

        fields.update(image=Image.fromarray(image), mask=Image.fromarray(mask), strength=1.0)
    request = sd.Request(**fields)
    unet = sd.build_pipeline(task, "DDIM")[0].unet
    steps = []
    after_two = sd.generate(request, on_step=lambda d, t: steps.append(d), should_stop=lambda: len(steps) >= 2)
    steps.clear()
    counts = {}
    with counting(unet.mid_block, counts, "mid"), counting(unet.up_blocks[-1], counts, "up"):
        inside = sd.generate(request, on_step=lambda d, t: steps.append(d), should_stop=lambda: counts["mid"] > 2)
    assert steps == [1, 2] and counts["up"] == 2  # the third step stopped inside its UNet pass
    assert inside.info["interrupted"] is True and inside.info["stopped_after_step"] == 2
    assert inside.info["total_steps"] == 8
    for ours, theirs in zip(inside.images, after_two.images, strict=True):
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))


def test_sd_stop_before_any_step_returns_the_input_or_gray(configured):
    gray = sd.generate(sd.Request(task="txt2img", prompt="x", steps=4, seed=1), should_stop=lambda: True)
    assert gray.info["stopped_after_step"] == 0 and gray.info["interrupted"] is True
    assert np.unique(np.asarray(gray.images[0])).tolist() == [128]


def test_sd_clip_guidance_stops_inside_its_clip_pass(configured):
    from pipelines.clip import get_clip

    request = sd.Request(task="txt2img", prompt="x", steps=6, seed=4, clip_prompt="a cat", clip_scale=2, cuts=2)
    visual = get_clip(None).model.visual
    steps, armed = [], []
    handle = visual.register_forward_hook(lambda *_: armed.append(len(steps) >= 1))
    try:
        result = sd.generate(request, on_step=lambda d, t: steps.append(d), should_stop=lambda: any(armed))
    finally:
        handle.remove()
    # CLIP acts on the last half of the steps (4-6): its first pass is in step 4, whose backward pass is stopped.
    assert steps == [1, 2, 3] and result.info["interrupted"] is True and result.info["stopped_after_step"] == 3
