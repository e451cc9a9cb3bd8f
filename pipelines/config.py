"""Environment configuration, read when asked (never at import), so tests and Spaces can set it first."""

from __future__ import annotations

import os

from guidance.colors import shown
from pipelines.bundled import BUNDLED_LABEL, bundled_path, prefer_bundled

DEFAULT_UNCOND_MODELS = (
    "google/ddpm-celebahq-256",
    "johnowhitaker/sd-class-wikiart-from-bedrooms",
    "google/ddpm-bedroom-256",
    "google/ddpm-church-256",
)
DEFAULT_CLIP_MODEL = "ViT-B-32"
DEFAULT_CLIP_PRETRAINED = "openai"


def setting(name: str, default: float, minimum: float, kind: type = int):
    """A numeric environment setting as `kind`, at least `minimum`; `default` when unset or not a number."""
    try:
        return max(kind(minimum), kind(os.environ.get(name, str(default))))
    except ValueError:
        return kind(default)


def uncond_models() -> list[str]:
    """The unconditional models users may pick, the default first.

    `UNCOND_MODELS` (comma-separated), plus the bundled emoji preset when its weights are present; the preset is
    the default when the Hub is unreachable and no model is configured (a configured one is the default, online
    or offline).
    """
    configured = [entry.strip() for entry in os.environ.get("UNCOND_MODELS", "").split(",") if entry.strip()]
    models = configured or list(DEFAULT_UNCOND_MODELS)
    if bundled_path("ddpm") is not None:
        first = prefer_bundled("ddpm") and not configured
        models = [BUNDLED_LABEL, *models] if first else [*models, BUNDLED_LABEL]
    return models


def model_location(model: str) -> str:
    """The hub id or folder to load for a model choice (the bundled preset maps to its folder)."""
    return bundled_path("ddpm") if model == BUNDLED_LABEL else model


def clip_model(model: str | None = None) -> tuple[str, str | None]:
    """The CLIP that guides `model`: the bundled emoji CLIP for the bundled preset, else (`CLIP_MODEL`,
    `CLIP_PRETRAINED`); the tag is None for `local-dir:`/`hf-hub:` references."""
    if model == BUNDLED_LABEL and bundled_path("clip") is not None:
        return f"local-dir:{bundled_path('clip')}", None
    name = os.environ.get("CLIP_MODEL", "").strip() or DEFAULT_CLIP_MODEL
    pretrained = os.environ.get("CLIP_PRETRAINED", "").strip() or DEFAULT_CLIP_PRETRAINED
    if name.startswith(("local-dir:", "hf-hub:")):
        return name, None
    return name, pretrained


def check_model(model: str) -> str:
    """Return `model` if it is one of the configured unconditional models, else raise ValueError."""
    allowed = uncond_models()
    if model not in allowed:
        raise ValueError(f"model {shown(model)} is not one of the configured models: {', '.join(allowed)}")
    return model
