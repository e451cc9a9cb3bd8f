"""The bundled emoji model family (trained by `training/`, shipped under models/emoji) and offline detection.

A preset appears only when its weights are present; when the Hub is unreachable at start-up (or
`HF_HUB_OFFLINE=1`), the bundled models become the defaults.
"""

from __future__ import annotations

import functools
import os
import socket

BUNDLED_LABEL = "emoji (bundled, offline)"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The file whose presence marks each bundled model as trained and shipped.
WEIGHT_FILES = {
    "ddpm": os.path.join("ddpm", "unet", "diffusion_pytorch_model.safetensors"),
    "clip": os.path.join("clip", "open_clip_model.safetensors"),
    "clip-score": os.path.join("clip-score", "open_clip_model.safetensors"),
    "sd": os.path.join("sd", "unet", "diffusion_pytorch_model.safetensors"),
}


def bundled_dir() -> str:
    """Where the bundled models live: `BUNDLED_MODELS_DIR`, else models/emoji in the repository."""
    return os.environ.get("BUNDLED_MODELS_DIR", "").strip() or os.path.join(REPO_ROOT, "models", "emoji")


def bundled_path(name: str) -> str | None:
    """The folder of bundled model `name` (ddpm, clip, clip-score, sd), or None when its weights are absent."""
    if os.path.isfile(os.path.join(bundled_dir(), WEIGHT_FILES[name])):
        return os.path.join(bundled_dir(), name)
    return None


@functools.lru_cache(maxsize=1)
def hub_unreachable(timeout: float = 2.0) -> bool:
    """True when `HF_HUB_OFFLINE` is set or huggingface.co cannot be reached (checked once per process)."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout):
            return False
    except OSError:
        return True


def prefer_bundled(name: str) -> bool:
    """Whether bundled model `name` should be the default: it is present and the Hub is unreachable."""
    return bundled_path(name) is not None and hub_unreachable()
