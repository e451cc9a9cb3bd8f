"""The ZeroGPU contract, simulated on the CPU: every GPU function gets pickled arguments in a forked process, yields
pickled progress and results back, and stops within one step; so no unpicklable argument can creep back in."""

import pickle
import time
from dataclasses import replace

import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from pipelines import budget
from pipelines import stable_diffusion as sd
from pipelines import unconditional as uncond
from pipelines.families import Family
from pipelines.gpu import SIMULATE_ENV, WORKER_ERROR, _simulated, gpu, on_zero_gpu
from pipelines.jobs import StepDone, StopFlags, StopToken, run_steps
from tests.conftest import gallery_pixels, running_app, tiny_model_settings

SD2_FAMILY = Family("SD", "SD 2.x", 768, "v_prediction", None, False)


def _simulate(function, duration):
    """`function` (a @gpu generator, a no-op off ZeroGPU) under the simulated contract."""
    return _simulated(function, duration)


def test_off_zero_gpu_the_decorator_is_a_no_op(monkeypatch):
    monkeypatch.delenv(SIMULATE_ENV, raising=False)

    def steps(request):
        yield request

    assert not on_zero_gpu()
    assert gpu(duration=budget.unconditional_seconds)(steps) is steps


def test_the_simulation_refuses_what_zero_gpu_cannot_pickle(configured):
    simulated = _simulate(uncond.generate_steps, budget.unconditional_seconds)
    request = uncond.Request(model=configured["unet"], steps=2, seed=1)
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        next(simulated(request, lambda: False))  # a callable cannot cross the process boundary


def test_a_forked_worker_reports_every_step_and_returns_the_same_pixels(configured, tmp_path):
    request = uncond.validate(uncond.Request(model=configured["unet"], steps=4, seed=3, batch_size=2))
    events = list(_simulate(uncond.generate_steps, budget.unconditional_seconds)(request, None))
    assert [(event.done, event.total) for event in events[:-1]] == [(step, 4) for step in range(1, 5)]
    in_process = uncond.generate(request)
    for forked, local in zip(events[-1].images, in_process.images, strict=True):
        assert np.array_equal(np.asarray(forked), np.asarray(local))


def test_a_stop_token_reaches_the_forked_worker_within_one_step(configured, tmp_path):
    flags = StopFlags(str(tmp_path))
    token = flags.start("session")
    request = uncond.validate(uncond.Request(model=configured["unet"], steps=50, seed=3))
    seen = []

    def on_step(done, total):
        seen.append(done)
        if done == 2:
            assert flags.stop("session")

    result = run_steps(_simulate(uncond.generate_steps, budget.unconditional_seconds)(request, token), on_step)
    assert result.info["interrupted"] and result.info["stopped_after_step"] <= 3, result.info
    flags.finish("session", token)
    assert not token.is_set() and flags.running() == 0


def test_sd_requests_with_images_cross_the_boundary(configured):
    image, mask = Image.new("RGB", (64, 64), "white"), Image.new("L", (64, 64), 0)
    mask.paste(255, (8, 8, 40, 40))
    request = sd.validate(sd.Request(task="inpaint", prompt="a cat", image=image, mask=mask, steps=2, seed=4))
    events = list(_simulate(sd.generate_steps, budget.sd_seconds)(request, StopToken("/nonexistent/stop")))
    assert isinstance(events[0], StepDone) and events[-1].info["task"] == "inpaint"
    local = sd.generate(request)
    assert np.array_equal(np.asarray(events[-1].images[0]), np.asarray(local.images[0]))


def test_an_error_in_the_worker_is_a_sentence_not_a_worker_error(configured):
    request = uncond.Request(model=configured["unet"], steps=2, seed=1, color_scale=1.0, color="not a color")
    with pytest.raises(ValueError, match="color"):
        run_steps(_simulate(uncond.generate_steps, budget.unconditional_seconds)(request, None))


def test_durations_grow_with_the_work_and_stay_bounded(monkeypatch):
    monkeypatch.setattr(uncond, "native_side", lambda model: 256)  # a celebahq-size pixel model
    monkeypatch.setattr(sd, "known_family", lambda model: replace(SD2_FAMILY, name="SD 1.x", native_size=512))
    small = budget.unconditional_seconds(uncond.Request(model="m", steps=10))
    large = budget.unconditional_seconds(uncond.Request(model="m", steps=1000, batch_size=8))
    clip_request = uncond.Request(model="m", steps=500, clip_scale=3, cuts=64, clip_method="cutouts")
    clip = budget.unconditional_seconds(clip_request)
    plain = budget.unconditional_seconds(uncond.Request(model="m", steps=500))
    assert budget.MIN_SECONDS == small < plain < clip < large == budget.MAX_SECONDS
    txt2img = budget.sd_seconds(sd.Request(task="txt2img", steps=100, width=512, height=512))
    img2img = budget.sd_seconds(sd.Request(task="img2img", steps=100, width=512, height=512, strength=0.3))
    assert (
        budget.MIN_SECONDS
        <= img2img
        < txt2img
        < budget.sd_seconds(sd.Request(task="txt2img", steps=25, width=1024, height=1024, batch_size=4))
    )
    for hostile in (None, "abc", float("nan"), float("inf"), -5, [1]):  # what validation would refuse: the longest
        assert budget.sd_seconds(sd.Request(task="txt2img", steps=hostile, width=hostile, batch_size=hostile)) == 300
    # Configs unreadable here (no native size): the longest, not the shortest.
    monkeypatch.setattr(uncond, "native_side", lambda model: 0)
    assert budget.unconditional_seconds(uncond.Request(model="m", steps=10)) == budget.MAX_SECONDS
    monkeypatch.setattr(sd, "known_family", lambda model: None)
    assert budget.sd_seconds(sd.Request(task="txt2img", steps=25, width=512, height=512)) == budget.MAX_SECONDS
    # A tiny model still costs its passes: 1000 steps of the bundled 32 px DDPM with a UNet gradient (3 passes).
    monkeypatch.setattr(uncond, "native_side", lambda model: 32)
    tiny = uncond.Request(model="m", steps=1000, color="red", color_scale=1, gradient_method="unet")
    assert budget.unconditional_seconds(tiny) >= budget.OVERHEAD_SECONDS + budget.MARGIN * 1000 * 3 * 0.01


def test_sd_durations_read_the_limits_measure_of_work(monkeypatch):
    """One measure: the duration follows the work the limits count, so the hires fix's second pass, a step without
    CFG (CFG scale 1, or an LCM UNet that reads the scale in one pass) and the model's native size all count."""
    family = {"few_step": None}
    monkeypatch.setattr(sd, "known_family", lambda model: replace(SD2_FAMILY, **family))
    plain = sd.Request(task="txt2img", steps=40, width=768, height=768, batch_size=2, guidance_scale=7)
    hires = replace(plain, hires_scale=2.0, hires_steps=20, strength=0.5)
    no_cfg = replace(plain, guidance_scale=1)
    # 48.4, 24.8 and 132.1 megapixel-steps (docs/zerogpu.md has more such rows).
    assert [budget.sd_seconds(request) for request in (no_cfg, plain, hires)] == [21, 30, 64]
    assert plain.work().passes == 1 and no_cfg.work().passes == 0.5
    assert plain.work().size_factor == 1  # 768 px is SD 2.x's native size; above a 512 px model's, pixels cost more
    family.update(few_step="LCM", native_size=512)
    assert plain.work().passes == 0.5 and plain.work().size_factor == pytest.approx(1 + (768**2 / 512**2 - 1) / 9)
    assert budget.sd_seconds(plain) < 30


def test_worker_errors_other_than_job_failures_keep_the_package_wording(configured):
    def broken(request, stop=None):
        yield StepDone(1, 1)
        raise KeyError("boom")

    simulated = _simulate(broken, 10)
    with pytest.raises(RuntimeError, match=WORKER_ERROR):
        list(simulated(1, None))


@pytest.fixture(scope="module")
def zero_gpu_client(tiny_models, tmp_path_factory):
    settings = {SIMULATE_ENV: "1", **tiny_model_settings(tiny_models, tmp_path_factory)}
    with running_app(settings, tmp_path_factory) as url:
        yield Client(url, verbose=False)


def test_all_six_endpoints_give_the_same_images_in_a_forked_worker(zero_gpu_client, server, tmp_path):
    plain_client = Client(server, verbose=False)
    image_path, mask_path = tmp_path / "image.png", tmp_path / "mask.png"
    Image.new("RGB", (64, 64), "white").save(image_path)
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (8, 8, 40, 40))
    mask.save(mask_path)
    calls = {
        "/unconditional": {"steps": 2, "batch_size": 1, "seed": 1},
        "/color_guided": {"steps": 2, "batch_size": 1, "seed": 1, "color": "#ff0000", "color_scale": 1},
        "/clip_guided": {"steps": 2, "batch_size": 1, "seed": 1, "prompt": "a cat", "clip_scale": 1, "cuts": 2},
        "/txt2img": {"prompt": "a cat", "steps": 2, "seed": 1},
        "/img2img": {"image": handle_file(str(image_path)), "prompt": "a cat", "steps": 2, "seed": 1},
        "/inpaint": {
            "image": handle_file(str(image_path)),
            "mask": handle_file(str(mask_path)),
            "prompt": "a cat",
            "steps": 2,
            "seed": 1,
        },
    }
    for endpoint, arguments in calls.items():
        gallery, info = zero_gpu_client.predict(**arguments, api_name=endpoint)
        assert len(gallery) >= 1 and info["seed"] == 1 and not info["interrupted"], (endpoint, info)
        plain_gallery, _ = plain_client.predict(**arguments, api_name=endpoint)
        for forked, local in zip(gallery_pixels(gallery), gallery_pixels(plain_gallery), strict=True):
            assert np.array_equal(forked, local), endpoint


def test_stop_reaches_a_forked_worker_through_the_app(zero_gpu_client):
    job = zero_gpu_client.submit(steps=400, batch_size=1, seed=2, previews=False, api_name="/unconditional")
    deadline = time.monotonic() + 60
    while not (job.status().progress_data or job.done()) and time.monotonic() < deadline:
        time.sleep(0.1)
    zero_gpu_client.predict(api_name="/stop")
    gallery, info = job.result(timeout=120)
    assert info["interrupted"] and info["stopped_after_step"] < 400 and len(gallery) == 1


def test_the_simulation_aborts_a_task_that_outlives_its_duration():
    def slow(request, stop=None):
        time.sleep(60)
        yield request

    started = time.monotonic()
    with pytest.raises(RuntimeError, match="GPU task aborted after its 1 s"):
        list(_simulate(slow, 1)(1, None))
    assert time.monotonic() - started < 10


def test_each_job_has_its_own_stop_token(tmp_path):
    flags = StopFlags(str(tmp_path))
    first = flags.start("session")
    second = flags.start("session")  # a later job of the same session
    assert first != second
    flags.finish("session", first)
    assert flags.stop("session") and second.is_set() and not first.is_set()
    flags.finish("session", second)
    assert list(tmp_path.iterdir()) == [] and flags.running() == 0
