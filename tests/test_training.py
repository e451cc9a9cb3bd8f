"""The emoji data set builder and the three training scripts at toy scale, and the app's bundled presets."""

import json
import os

import numpy as np
import pytest
from safetensors import safe_open

from pipelines import bundled
from pipelines.bundled import BUNDLED_LABEL
from training.build_emoji_dataset import FONT_PATH, SKIN_TONES, build, emoji_names

pytestmark = pytest.mark.skipif(
    not os.path.exists(FONT_PATH), reason="apt-get install -y fonts-noto-color-emoji (CI installs it)"
)


def test_emoji_list_skips_skin_tones_and_keeps_sequences():
    entries = emoji_names()
    assert len(entries) > 1800
    assert not any(SKIN_TONES & set(character) for character, _ in entries)
    names = {name for _, name in entries}
    assert {"grinning face", "red heart", "pizza", "dog face"} <= names
    assert any(name.startswith("flag ") for name in names)  # regional-indicator pairs
    assert any("\u200d" in character for character, _ in entries)  # ZWJ sequences


def test_data_set_is_deterministic_centred_64px_on_white():
    first, second = build(limit=24), build(limit=24)
    np.testing.assert_array_equal(first["images"], second["images"])
    assert first["images"].shape == (24, 64, 64, 3) and first["images"].dtype == np.uint8
    assert list(first["names"]) == list(second["names"]) and all(first["names"])
    corners = first["images"][:, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert (corners >= 200).mean() > 0.5  # mostly the plain white background at the corners


def test_full_data_set_renders_flags_and_sequences():
    data = build()
    assert 1500 < len(data["images"]) <= len(emoji_names())
    assert any(name.startswith("flag ") for name in data["names"])
    assert any("\u200d" in character for character in data["emoji"])


@pytest.fixture(scope="module")
def toy_bundle(tmp_path_factory):
    """Every training script run for a couple of steps on CPU, exported where the app looks for bundled models."""
    from training.build_emoji_dataset import build
    from training.train_clip import ClipConfig
    from training.train_clip import train as train_clip
    from training.train_ddpm import DDPMConfig
    from training.train_ddpm import train as train_ddpm
    from training.train_noise_aware_clip import NoiseAwareConfig
    from training.train_noise_aware_clip import train as train_noise_aware_clip
    from training.train_sd import SDConfig
    from training.train_sd import train as train_sd

    root = tmp_path_factory.mktemp("bundle")
    data_path = str(root / "emoji.npz")
    np.savez_compressed(data_path, **build(limit=48))
    common = dict(data=data_path, device="cpu")
    checkpoints = root / "checkpoints"
    toy_ddpm = dict(steps=2, batch_size=4, sample_count=4, eval_count=4, block_out_channels=(32, 32, 64))
    train_ddpm(DDPMConfig(**common, out=str(root / "ddpm"), checkpoints=str(checkpoints / "ddpm"), **toy_ddpm))
    train_clip(
        ClipConfig(**common, out=str(root / "clip"), checkpoints=str(checkpoints / "clip"), steps=2, batch_size=8)
    )
    noise_aware = dict(clip=str(root / "clip"), ddpm=str(root / "ddpm"), out=str(root / "clip"), steps=2, batch_size=8)
    train_noise_aware_clip(NoiseAwareConfig(**common, **noise_aware, checkpoints=str(checkpoints / "noise-aware")))
    train_clip(
        ClipConfig(
            **common,
            out=str(root / "clip-score"),
            checkpoints=str(checkpoints / "clip-score"),
            steps=2,
            batch_size=8,
            seed=1,
            vision_width=96,
        )
    )
    toy_sd = dict(vae_steps=2, unet_steps=2, batch_size=4, sample_count=4, unet_channels=(32, 32, 64))
    train_sd(SDConfig(**common, out=str(root / "sd"), checkpoints=str(checkpoints / "sd"), **toy_sd))
    return root


def _dtypes(path):
    with safe_open(path, "pt") as handle:
        return {handle.get_tensor(key).dtype for key in handle.keys()}


def test_training_exports_fp16_safetensors_and_sample_grids(toy_bundle):
    import torch

    from pipelines.clip import declares_noise_aware

    for name in ("ddpm", "clip", "clip-score", "sd"):
        assert os.path.isfile(toy_bundle / bundled.WEIGHT_FILES[name])
        assert _dtypes(toy_bundle / bundled.WEIGHT_FILES[name]) == {torch.float16}
    assert (toy_bundle / "checkpoints" / "ddpm" / "samples" / "step000002.png").is_file()
    assert (toy_bundle / "checkpoints" / "sd" / "unet" / "samples" / "step000002.png").is_file()
    assert (toy_bundle / "checkpoints" / "sd" / "vae" / "samples" / "step000002.png").is_file()
    score_config = json.loads((toy_bundle / "clip-score" / "open_clip_config.json").read_text())
    guide_config = json.loads((toy_bundle / "clip" / "open_clip_config.json").read_text())
    assert score_config["model_cfg"]["vision_cfg"]["width"] != guide_config["model_cfg"]["vision_cfg"]["width"]
    # The guiding CLIP is made noise-aware (read by the app: pixel models' CLIP guidance then reads x_t).
    assert guide_config["noise_aware"] is True and "noise_aware" not in score_config
    assert declares_noise_aware(f"local-dir:{toy_bundle / 'clip'}")
    assert not declares_noise_aware(f"local-dir:{toy_bundle / 'clip-score'}")


def test_presets_appear_only_with_weights(configured, monkeypatch, tmp_path):
    from pipelines import stable_diffusion as sd
    from pipelines.config import uncond_models

    monkeypatch.setenv("BUNDLED_MODELS_DIR", str(tmp_path))
    assert BUNDLED_LABEL not in uncond_models() and BUNDLED_LABEL not in sd.sd_models()


def test_bundled_presets_are_defaults_offline_and_selectable_online(configured, monkeypatch, toy_bundle):
    from pipelines import stable_diffusion as sd
    from pipelines.config import clip_model, uncond_models

    monkeypatch.setenv("BUNDLED_MODELS_DIR", str(toy_bundle))
    # Configured models are the defaults, online or offline; with none configured, offline, the presets are.
    assert uncond_models()[0] == configured["unet"] and sd.sd_models() == [configured["sd"], BUNDLED_LABEL]
    monkeypatch.delenv("UNCOND_MODELS")
    monkeypatch.delenv("SD_MODEL")
    assert uncond_models()[0] == BUNDLED_LABEL and sd.sd_models()[0] == BUNDLED_LABEL  # tests run offline
    monkeypatch.setenv("UNCOND_MODELS", f"{configured['unet']},{configured['unet_v']}")
    monkeypatch.setenv("SD_MODEL", configured["sd"])
    assert clip_model(BUNDLED_LABEL) == (f"local-dir:{toy_bundle / 'clip'}", None)
    assert clip_model(configured["unet"]) == (configured["clip"], None)
    monkeypatch.setattr(bundled, "hub_unreachable", lambda: False)
    assert uncond_models()[-1] == BUNDLED_LABEL and sd.sd_models() == [configured["sd"], BUNDLED_LABEL]


def test_every_tab_runs_on_the_bundled_models(configured, monkeypatch, toy_bundle):
    from PIL import Image

    from pipelines import stable_diffusion as sd
    from pipelines import unconditional as uncond

    monkeypatch.setenv("BUNDLED_MODELS_DIR", str(toy_bundle))
    result = uncond.generate(
        uncond.Request(
            model=BUNDLED_LABEL, steps=3, seed=1, prompt="red heart", clip_scale=3, color="red", color_scale=1
        )
    )
    assert result.images[0].size == (64, 64) and result.info["clip_model"] == f"{BUNDLED_LABEL}: clip"
    text = sd.generate(sd.Request(task="txt2img", model=BUNDLED_LABEL, prompt="red heart", steps=3, seed=1))
    assert text.images[0].size == (64, 64) and text.info["model"] == BUNDLED_LABEL
    image, mask = Image.new("RGB", (64, 64), "white"), Image.new("L", (64, 64), 0)
    mask.paste(255, (8, 8, 40, 40))
    painted = sd.generate(sd.Request(task="inpaint", model=BUNDLED_LABEL, image=image, mask=mask, steps=3))
    assert painted.info["model"] == BUNDLED_LABEL  # inpaints with the bundled base weights
    outside = np.asarray(mask) == 0
    np.testing.assert_array_equal(np.asarray(painted.images[0])[outside], np.asarray(image)[outside])


def test_shipped_bundle_fits_the_size_budget():
    shipped = os.path.join(bundled.REPO_ROOT, "models", "emoji")
    if not os.path.isdir(shipped):
        pytest.skip("no bundled weights are shipped yet (training needs the GPU)")
    total = sum(
        os.path.getsize(os.path.join(folder, name))
        for folder, _, files in os.walk(shipped)
        for name in files
        if name.endswith(".safetensors")
    )
    assert total < 80 * 2**20, f"bundled weights are {total / 2**20:.1f} MB"


def test_noise_aware_targets_are_bayes_rule_over_the_data_set():
    """The noise-aware CLIP's targets: p(image j | x_t) from Gaussian likelihoods N(x_t; sqrt(a) x_j, (1 - a) I)
    with a uniform prior; a clean sample names its source, a fully noised one names nobody in particular."""
    import torch

    from training.train_noise_aware_clip import posterior

    generator = torch.Generator().manual_seed(0)
    clean = torch.rand(5, 3, 4, 4, generator=generator) * 2 - 1
    alpha = torch.tensor([0.9999, 0.5, 0.1, 1e-6])
    samples = alpha.sqrt().view(-1, 1, 1, 1) * clean[[0, 1, 2, 3]] + (1 - alpha).sqrt().view(-1, 1, 1, 1) * torch.randn(
        4, 3, 4, 4, generator=generator
    )
    got = posterior(samples, clean, alpha)
    likelihood = torch.distributions.Normal(
        alpha.sqrt().view(-1, 1, 1) * clean.flatten(1)[None], (1 - alpha).sqrt().view(-1, 1, 1)
    )
    expected = torch.softmax(likelihood.log_prob(samples.flatten(1)[:, None]).sum(-1), dim=1)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert got[0, 0] > 0.999  # clean: its own source
    assert (got[3] - 0.2).abs().max() < 0.01  # all noise: uniform over the five
