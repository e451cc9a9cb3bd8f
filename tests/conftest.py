"""Shared fixtures: tiny random models saved like real checkpoints, configured through the environment."""

import os

# Before anything imports huggingface_hub: an accidental download must fail fast, not hang.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("STUDIO_DEVICE", "cpu")

import pytest  # noqa: E402

from tests.tiny_models import save_tiny_clip, save_tiny_unconditional  # noqa: E402


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """Paths of a tiny unconditional pipeline and a tiny open_clip model (`local-dir:` reference)."""
    root = tmp_path_factory.mktemp("models")
    unet_dir = save_tiny_unconditional(str(root / "tiny-ddpm"))
    second_dir = save_tiny_unconditional(str(root / "tiny-ddpm-v"), seed=1, prediction_type="v_prediction")
    clip_ref = save_tiny_clip(str(root / "tiny-clip"))
    return {"unet": unet_dir, "unet_v": second_dir, "clip": clip_ref}


@pytest.fixture()
def configured(tiny_models, monkeypatch):
    """Point the app's environment variables at the tiny models, with an empty model cache."""
    from pipelines.cache import MODELS

    monkeypatch.setenv("UNCOND_MODELS", f"{tiny_models['unet']},{tiny_models['unet_v']}")
    monkeypatch.setenv("CLIP_MODEL", tiny_models["clip"])
    MODELS.clear()
    yield tiny_models
    MODELS.clear()
