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
    work = limits.Work(steps=100, batch_size=4, width=512, height=512, cuts=8, passes=2)
    assert work.megapixel_steps == pytest.approx(100 * 4 * 512 * 512 * 2 / 1e6)
    assert work.cutout_steps == 100 * 4 * 8


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
    request = sd.SDRequest(task="txt2img", prompt="a", width=1024, height=1024, batch_size=4, steps=150)
    with pytest.raises(ValueError) as refused:
        sd.validate_sd(request)
    message = str(refused.value)
    assert "629.1 megapixel-steps" in message and "steps 150 x batch_size 4 x 1024x1024 px" in message
    assert "limit of 7 (set by STUDIO_MAX_MEGAPIXEL_STEPS)" in message


def test_each_single_limit_names_its_parameter_and_label(monkeypatch, no_model_loads):
    monkeypatch.setenv("STUDIO_MAX_STEPS", "20")
    with pytest.raises(
        ValueError,
        match=r"^steps 21 is above this server\'s limit of 20 \(set by STUDIO_MAX_STEPS\) "
        r'\("Steps" in the page\)$',
    ):
        sd.validate_sd(sd.SDRequest(task="txt2img", width=64, height=64, steps=21))
    monkeypatch.setenv("STUDIO_MAX_PIXELS", str(256 * 256))
    with pytest.raises(ValueError, match=r"width x height 512x256 px is above this server's limit of 65536"):
        sd.validate_sd(sd.SDRequest(task="txt2img", width=512, height=256, steps=5))
    sd.validate_sd(sd.SDRequest(task="txt2img", width=256, height=256, steps=20))  # at the limits: served


def test_img2img_counts_only_the_steps_its_strength_runs(monkeypatch, no_model_loads):
    from PIL import Image

    monkeypatch.setenv("STUDIO_MAX_STEPS", "10")
    image = Image.new("RGB", (64, 64), "white")
    assert sd.sd_work(sd.validate_sd(sd.SDRequest(task="img2img", image=image, steps=20, strength=0.5))).steps == 10
    with pytest.raises(ValueError, match="steps 11 is above"):
        sd.validate_sd(sd.SDRequest(task="img2img", image=image, steps=20, strength=0.55))


@pytest.mark.skipif(bundled_path("ddpm") is None, reason="bundled DDPM not shipped")
def test_unconditional_limits_read_the_native_size_and_count_cutouts_and_passes(monkeypatch, no_model_loads):
    assert uncond.native_side(BUNDLED_LABEL) == 32  # from the UNet config alone
    request = uncond.SamplingRequest(model=BUNDLED_LABEL, steps=1000, batch_size=1, prompt="cat", clip_scale=1, cuts=32)
    with pytest.raises(ValueError, match=r"32000 cutout-steps \(steps 1000 x batch_size 1 x cuts 32; lower cuts"):
        uncond.validate(request)
    monkeypatch.setenv("STUDIO_MAX_MEGAPIXEL_STEPS", "2")
    guided = uncond.SamplingRequest(
        model=BUNDLED_LABEL, steps=300, batch_size=2, color="red", color_scale=1, gradient_method="unet", compare=True
    )
    # 300 x 2 x 32 x 32 = 0.61 megapixel-steps, x4 passes (3 for the UNet gradient, 1 for the comparison).
    with pytest.raises(ValueError, match=r"2\.5 megapixel-steps .* x 4 passes"):
        uncond.validate(guided)
    guided.compare = False
    assert uncond.request_work(uncond.validate(guided), 32).megapixel_steps == pytest.approx(1.8432)
