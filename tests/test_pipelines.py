"""The unconditional pipeline wrapper: validation, caching, seeds, metadata, interruption."""

import numpy as np
import pytest
from diffusers import DiffusionPipeline

from pipelines import unconditional as uncond
from pipelines.cache import MODELS
from pipelines.outputs import read_parameters, save_png


def request(models, **overrides):
    fields = dict(model=models["unet"], steps=4, batch_size=1, seed=7)
    fields.update(overrides)
    return uncond.Request(**fields)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"model": "someone/arbitrary-repo"}, "model 'someone/arbitrary-repo' is not one of the configured"),
        ({"scheduler": "Euler"}, "scheduler 'Euler'"),
        ({"steps": 0}, "steps must be between 1 and 1000, got 0"),
        ({"steps": 2.5}, "steps must be an integer, got 2.5"),
        ({"batch_size": 9}, "batch_size must be between 1 and 8, got 9"),
        ({"seed": "abc"}, "seed must be an integer, got 'abc'"),
        ({"eta": 2}, "eta must be between 0 and 1"),
        ({"color": "nope", "color_scale": 1}, "color 'nope' is not a color"),
        ({"color": "", "color_scale": 1}, "color is empty"),
        ({"color_scale": -1}, "color_scale must be between 0"),
        ({"clip_scale": 5, "prompt": "  "}, "prompt is empty"),
        ({"cuts": 0}, "cuts must be between 1"),
        ({"gradient_method": "magic"}, "gradient_method 'magic'"),
    ],
)
def test_validation_names_parameter_and_value(configured, overrides, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("+", r"\+")):
        uncond.validate(request(configured, **overrides))


def test_random_seed_is_resolved_and_reported(configured):
    checked = uncond.validate(request(configured, seed=-1))
    assert 0 <= checked.seed < 2**31


def test_models_load_once(configured, monkeypatch):
    loads = []
    original = DiffusionPipeline.from_pretrained.__func__

    def counting(cls, *args, **kwargs):
        loads.append(args[0])
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(DiffusionPipeline, "from_pretrained", classmethod(counting))
    for _ in range(3):
        uncond.generate(request(configured, color="red", color_scale=2, prompt="a cat", clip_scale=2))
    assert loads == [configured["unet"]]
    assert MODELS.load_count == 2  # one UNet, one CLIP model


def test_same_seed_same_pixels_and_batch_in_seed_order(configured):
    batch = uncond.generate(request(configured, seed=100, batch_size=3))
    single = uncond.generate(request(configured, seed=101))
    assert [p["seed"] for p in batch.image_parameters] == [100, 101, 102]
    # Same seed, same batch size: bit for bit (below). Across batch sizes the CPU's conv kernels may differ with
    # the batch (seen on an AVX2-only machine: 5 of 12288 values off by one level), so allow one level.
    in_batch, alone = np.asarray(batch.images[1]).astype(int), np.asarray(single.images[0]).astype(int)
    assert np.abs(in_batch - alone).max() <= 1 and (in_batch != alone).mean() < 0.01
    again = uncond.generate(request(configured, seed=100, batch_size=3))
    np.testing.assert_array_equal(np.asarray(again.images[1]), np.asarray(batch.images[1]))
    assert batch.info["seeds"] == [100, 101, 102]


def test_compare_appends_unguided_images_of_the_same_seeds(configured):
    result = uncond.generate(request(configured, seed=5, batch_size=2, color="#00f", color_scale=1, compare=True))
    plain = uncond.generate(request(configured, seed=5, batch_size=2))
    assert [p["kind"] for p in result.image_parameters] == ["guided", "guided", "unguided", "unguided"]
    assert [p["seed"] for p in result.image_parameters] == [5, 6, 5, 6]
    np.testing.assert_array_equal(np.asarray(result.images[2]), np.asarray(plain.images[0]))
    assert not np.array_equal(np.asarray(result.images[0]), np.asarray(plain.images[0]))


def test_v_prediction_model_samples(configured):
    result = uncond.generate(
        request(configured, model=configured["unet_v"], scheduler="DPM++ 2M", color="red", color_scale=1)
    )
    assert result.images[0].size == (64, 64)  # a 32x32 model, shown 2x
    assert result.info["upscaled_from"] == "32x32"


def test_stop_returns_preview_and_marks_interrupted(configured):
    steps_seen = []
    result = uncond.generate(
        request(configured, steps=50, batch_size=2),
        on_step=lambda done, total: steps_seen.append((done, total)),
        should_stop=lambda: len(steps_seen) >= 3,
    )
    assert steps_seen == [(1, 50), (2, 50), (3, 50)]
    assert result.info["interrupted"] is True and result.info["stopped_after_step"] == 3
    assert len(result.images) == 2


def test_info_records_parameters(configured):
    result = uncond.generate(request(configured, scheduler="DDPM", prompt="a cat", clip_scale=3, cuts=2))
    info = result.info
    assert info["scheduler"] == "DDPM" and "eta" not in info  # eta only applies to DDIM
    assert info["prompt"] == "a cat" and info["cuts"] == 2 and info["clip_model"] == configured["clip"]
    assert "color" not in info and info["elapsed_seconds"] > 0 and info["device"] == "cpu"


def test_png_carries_parameters(tmp_path, configured):
    result = uncond.generate(request(configured, seed=9))
    path = save_png(result.images[0], result.image_parameters[0], str(tmp_path))
    stored = read_parameters(path)
    assert stored["seed"] == 9 and stored["model"] == configured["unet"] and stored["steps"] == 4


def test_clip_guidance_toward_a_reference_picture_alone_or_with_a_prompt(configured):
    from PIL import Image

    reference = Image.fromarray(np.random.default_rng(5).integers(0, 256, (40, 40, 3), dtype=np.uint8))
    plain = uncond.generate(request(configured, seed=4))
    # The page's default CLIP strength with an empty prompt: guidance toward the picture alone, no refusal.
    alone = request(configured, seed=4, clip_scale=3, clip_image=reference, clip_image_scale=3, cuts=2)
    alone = uncond.generate(alone)
    assert alone.info["clip_scale"] == 0
    assert alone.info["clip_image"].startswith("40x40 sha256:") and alone.info["clip_image_scale"] == 3
    assert "prompt" not in alone.info and alone.info["clip_model"] == configured["clip"]
    assert not np.array_equal(np.asarray(plain.images[0]), np.asarray(alone.images[0]))
    both = request(configured, seed=4, prompt="a cat", clip_scale=3, clip_image=reference, clip_image_scale=3)
    both = uncond.generate(both)
    assert both.info["prompt"] == "a cat"
    assert not np.array_equal(np.asarray(alone.images[0]), np.asarray(both.images[0]))
    with pytest.raises(ValueError, match="clip_image is empty but clip_image_scale is above 0"):
        uncond.validate(request(configured, clip_image_scale=1))
