"""Per-request compute limits: refused before any model loads, with the parameter, value, limit and variable."""

import pytest

from pipelines import limits
from pipelines import stable_diffusion as sd
from pipelines import unconditional as uncond
from pipelines.bundled import BUNDLED_LABEL, bundled_path


@pytest.fixture
def no_model_loads(monkeypatch):
    """Any model load fails the test: limits must refuse first."""

    def refuse(*_args, **_kwargs):
        raise AssertionError("a model was loaded for a request the limits refuse")

    monkeypatch.setattr(sd.MODELS, "get", refuse)
    monkeypatch.setattr(uncond.MODELS, "get", refuse)


@pytest.fixture(autouse=True)
def clean_limit_env(monkeypatch):
    for name in limits.ENV.values():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("STUDIO_DEVICE", "cpu")


def test_work_counts_megapixel_steps_passes_and_cutouts():
    work = limits.Work(steps=100, batch_size=4, width=512, height=512, cuts=8, passes=2, takes=3)
    assert work.megapixel_steps == pytest.approx(100 * 4 * 512 * 512 * 2 / 1e6)
    assert work.cutout_steps == 100 * 4 * 8 * 3


def test_a_size_above_the_native_one_and_the_vae_passes_are_counted():
    native = limits.Work(steps=10, batch_size=1, width=64, height=64, native_pixels=64 * 64, coder_passes=2)
    assert native.size_factor == 1 and native.megapixel_steps == pytest.approx(12 * 64 * 64 / 1e6)
    large = limits.Work(steps=10, batch_size=1, width=256, height=256, native_pixels=64 * 64, coder_passes=2)
    assert large.size_factor == pytest.approx(1 + 15 / limits.ATTENTION_GROWTH)  # 16 native areas
    assert large.megapixel_steps == pytest.approx(12 * 256 * 256 * large.size_factor / 1e6)
    smaller = limits.Work(steps=10, batch_size=1, width=32, height=32, native_pixels=64 * 64)
    assert smaller.size_factor == 1


def test_a_value_just_above_the_limit_reads_above_it():
    assert limits.above(7.004, 7) == "7.004" and limits.above(629.14, 7) == "629.1" and limits.above(8, 7) == "8"
    work = limits.Work(steps=367, batch_size=8, width=32, height=32)  # 3.006 megapixel-steps
    with pytest.raises(ValueError, match=r"this request's 3\.01 megapixel-steps .* limit of 3 "):
        limits.check_work(work, limits.current_limits(accelerated=False))


def test_the_jobs_of_one_request_are_counted_together():
    one = limits.Work(steps=500, batch_size=4, width=32, height=32)  # 2.05 megapixel-steps: within 3 alone
    cpu = limits.current_limits(accelerated=False)
    limits.check_work(one, cpu)
    limits.check_total([one], cpu, "batches", "batch_count")
    with pytest.raises(ValueError, match=r"this request's 4\.1 megapixel-steps \(2 batches together; lower batch_c"):
        limits.check_total([one, one], cpu, "batches", "batch_count")
    clip = limits.Work(steps=50, batch_size=4, width=32, height=32, cuts=4, takes=3)  # 2400 cutout-steps
    with pytest.raises(ValueError, match=r"4800 cutout-steps \(2 sweep cells together"):
        limits.check_total([clip, clip], cpu, "sweep cells", "the number of values")


def test_defaults_are_tighter_on_a_cpu_and_the_environment_overrides_them(monkeypatch):
    assert limits.current_limits(accelerated=True).megapixel_steps == limits.GPU_MEGAPIXEL_STEPS
    assert limits.current_limits(accelerated=False).megapixel_steps == limits.CPU_MEGAPIXEL_STEPS
    assert limits.current_limits(accelerated=False).steps is None  # only the UI's hard range
    monkeypatch.setenv("STUDIO_MAX_MEGAPIXEL_STEPS", "12.5")
    monkeypatch.setenv("STUDIO_MAX_STEPS", "40")
    assert limits.current_limits(accelerated=True) == limits.Limits(steps=40, megapixel_steps=12.5)


@pytest.mark.parametrize("raw", ["abc", "0", "-3", "nan", "inf", "1.5"])
def test_a_bad_limit_variable_is_named(monkeypatch, raw):
    monkeypatch.setenv("STUDIO_MAX_BATCH", raw)
    with pytest.raises(ValueError, match="STUDIO_MAX_BATCH must be a positive integer"):
        limits.current_limits(accelerated=False)


def test_the_cpu_held_slot_request_is_refused_before_loading(no_model_loads):
    # The request that held the only slot for 1469 s on a CPU: 1024x1024, 4 images, 150 steps.
    request = sd.Request(task="txt2img", prompt="a", width=1024, height=1024, batch_size=4, steps=150)
    with pytest.raises(ValueError) as refused:
        sd.validate(request)
    message = str(refused.value)
    assert "megapixel-steps (steps 150 x batch_size 4 x 1024x1024 px" in message
    assert f"limit of {limits.CPU_MEGAPIXEL_STEPS:g} (set by STUDIO_MAX_MEGAPIXEL_STEPS)" in message


@pytest.mark.skipif(bundled_path("sd") is None, reason="bundled SD not shipped")
def test_on_a_cpu_the_bundled_models_large_sizes_are_refused_and_their_tabs_maxima_served(no_model_loads):
    from PIL import Image

    # 1024x1024 at one step took 365 s (attention over 256 times the native pixels); img2img of a 4096x4096 input
    # works at 1024x1024: it ran past 240 s at 2 steps.
    with pytest.raises(ValueError, match="for a size above the model's native one"):
        sd.validate(sd.Request(task="txt2img", model=BUNDLED_LABEL, width=1024, height=1024, steps=1))
    black = Image.new("RGB", (4096, 4096))
    with pytest.raises(ValueError, match=r"1024x1024 px x .* for a size above the model's native one"):
        sd.validate(sd.Request(task="img2img", model=BUNDLED_LABEL, image=black, steps=2, strength=1))
    # What the tabs offer at the native size is served: 4 images of 150 steps, 1000 DDPM steps for 2 images.
    sd.validate(sd.Request(task="txt2img", model=BUNDLED_LABEL, prompt="a", batch_size=4, steps=150))
    uncond.validate(uncond.Request(model=BUNDLED_LABEL, steps=1000, batch_size=2))


def test_each_single_limit_names_its_parameter_and_label(monkeypatch, no_model_loads):
    monkeypatch.setenv("STUDIO_MAX_STEPS", "20")
    with pytest.raises(
        ValueError,
        match=r"^steps 21 is above this server\'s limit of 20 \(set by STUDIO_MAX_STEPS\) "
        r'\("Steps" in the page\)$',
    ):
        sd.validate(sd.Request(task="txt2img", width=64, height=64, steps=21))
    monkeypatch.setenv("STUDIO_MAX_PIXELS", str(256 * 256))
    with pytest.raises(ValueError, match=r"width x height 512x256 px is above this server's limit of 65536"):
        sd.validate(sd.Request(task="txt2img", width=512, height=256, steps=5))
    sd.validate(sd.Request(task="txt2img", width=256, height=256, steps=10))  # at the limits: served


def test_img2img_counts_only_the_steps_its_strength_runs(monkeypatch, no_model_loads):
    from PIL import Image

    monkeypatch.setenv("STUDIO_MAX_STEPS", "10")
    image = Image.new("RGB", (64, 64), "white")
    assert sd.sd_work(sd.validate(sd.Request(task="img2img", image=image, steps=20, strength=0.5))).steps == 10
    with pytest.raises(ValueError, match="steps 11 is above"):
        sd.validate(sd.Request(task="img2img", image=image, steps=20, strength=0.55))


@pytest.mark.skipif(bundled_path("ddpm") is None, reason="bundled DDPM not shipped")
def test_unconditional_limits_read_the_native_size_and_count_cutouts_and_passes(monkeypatch, no_model_loads):
    assert uncond.native_side(BUNDLED_LABEL) == 32  # from the UNet config alone
    request = uncond.Request(
        model=BUNDLED_LABEL, steps=1000, batch_size=1, prompt="cat", clip_scale=1, cuts=32, clip_method="cutouts"
    )
    with pytest.raises(ValueError, match=r"32000 cutout-steps \(steps 1000 x batch_size 1 x cuts 32; lower cuts"):
        uncond.validate(request)
    request.clip_method = "auto"  # the bundled model ships its training images: guidance by them runs no cutouts
    assert uncond.validate(request).work().cutout_steps == 0
    monkeypatch.setenv("STUDIO_MAX_MEGAPIXEL_STEPS", "2")
    guided = uncond.Request(
        model=BUNDLED_LABEL, steps=300, batch_size=2, color="red", color_scale=1, gradient_method="unet", compare=True
    )
    # 300 x 2 x 32 x 32 = 0.61 megapixel-steps, x4 passes (3 for the UNet gradient, 1 for the comparison).
    with pytest.raises(ValueError, match=r"2\.5 megapixel-steps .* x 4 passes"):
        uncond.validate(guided)
    guided.compare = False
    assert uncond.request_work(uncond.validate(guided), 32).megapixel_steps == pytest.approx(1.8432)
