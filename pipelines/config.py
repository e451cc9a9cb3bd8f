"""Environment configuration, read when asked (never at import), so tests and Spaces can set it first."""

from __future__ import annotations

import os

DEFAULT_UNCOND_MODELS = (
    "google/ddpm-celebahq-256",
    "johnowhitaker/sd-class-wikiart-from-bedrooms",
    "google/ddpm-bedroom-256",
    "google/ddpm-church-256",
)
DEFAULT_CLIP_MODEL = "ViT-B-32"
DEFAULT_CLIP_PRETRAINED = "openai"


def uncond_models() -> list[str]:
    """The unconditional models users may pick (`UNCOND_MODELS`, comma-separated); the first is the default."""
    raw = os.environ.get("UNCOND_MODELS", "")
    models = [entry.strip() for entry in raw.split(",") if entry.strip()]
    return models or list(DEFAULT_UNCOND_MODELS)


def clip_model() -> tuple[str, str | None]:
    """(`CLIP_MODEL`, `CLIP_PRETRAINED`); the tag is None for `local-dir:`/`hf-hub:` references."""
    name = os.environ.get("CLIP_MODEL", "").strip() or DEFAULT_CLIP_MODEL
    pretrained = os.environ.get("CLIP_PRETRAINED", "").strip() or DEFAULT_CLIP_PRETRAINED
    if name.startswith(("local-dir:", "hf-hub:")):
        return name, None
    return name, pretrained


def check_model(model: str) -> str:
    """Return `model` if it is one of the configured unconditional models, else raise ValueError."""
    allowed = uncond_models()
    if model not in allowed:
        raise ValueError(f"model {model!r} is not one of the configured models: {', '.join(allowed)}")
    return model
