"""The bundled emoji model family (trained by `training/`, shipped under models/emoji) and offline detection.

A preset appears only when its weights are present; when the Hub is unreachable at start-up (or
`HF_HUB_OFFLINE=1`), the bundled models become the defaults. A Hub model that cannot be loaded for that reason is
reported in one sentence (`unavailable_message`), and the page's status line says what it offers (`status_text`).
"""

from __future__ import annotations

import functools
import os
import socket

BUNDLED_LABEL = "emoji (bundled, offline)"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Shards of the bundled weights at most this size: every file under the 10 MB a Space takes outside LFS; diffusers
# loads the shards through their index file unchanged.
MAX_SHARD_SIZE = "8MB"
# The file whose presence marks each bundled model as trained and shipped (or its shards' index beside it).
WEIGHT_FILES = {
    "ddpm": os.path.join("ddpm", "unet", "diffusion_pytorch_model.safetensors"),
    "clip": os.path.join("clip", "open_clip_model.safetensors"),
    "clip-score": os.path.join("clip-score", "open_clip_model.safetensors"),
    "sd": os.path.join("sd", "unet", "diffusion_pytorch_model.safetensors"),
}
# Errors (matched by class name, anywhere in an error's chain) that mean the Hub could not be reached: offline mode,
# a file neither reachable nor cached (huggingface_hub), no route or DNS (builtins, socket, httpx, requests, urllib).
UNREACHABLE_ERRORS = frozenset(
    {
        "OfflineModeIsEnabled",
        "LocalEntryNotFoundError",
        "ConnectionError",
        "ConnectError",
        "ConnectTimeout",
        "TimeoutError",
        "TimeoutException",
        "gaierror",
        "URLError",
    }
)
# Per kind of cached model (the first element of a model cache key): how its name is shown, which bundled models
# replace it in the UI, and what else works when none does.
MODEL_KINDS = {
    "unconditional": ("", ("ddpm",), "add a local model folder to UNCOND_MODELS"),
    "clip": ("CLIP ", ("ddpm", "clip"), "set CLIP_MODEL to local-dir:<folder>"),
    "sd": ("", ("sd",), "set SD_MODELS to a local folder"),
    "sd-inpaint": ("", ("sd",), "set SD_INPAINT_MODEL to a local folder"),
}


def bundled_dir() -> str:
    """Where the bundled models live: `BUNDLED_MODELS_DIR`, else models/emoji in the repository."""
    return os.environ.get("BUNDLED_MODELS_DIR", "").strip() or os.path.join(REPO_ROOT, "models", "emoji")


def weights_at(path: str) -> bool:
    """Whether the weight file `path` is there, whole or as shards (diffusers' index beside them)."""
    return os.path.isfile(path) or os.path.isfile(path + ".index.json")


def bundled_path(name: str) -> str | None:
    """The folder of bundled model `name` (ddpm, clip, clip-score, sd), or None when its weights are absent."""
    return os.path.join(bundled_dir(), name) if weights_at(os.path.join(bundled_dir(), WEIGHT_FILES[name])) else None


def recorded_name(reference: str) -> str:
    """How a model reference is recorded in outputs: a bundled model by the bundled label and its name, never by
    the server's folder (a `local-dir:` prefix is dropped with it); any other reference as it is."""
    location = os.path.abspath(reference.removeprefix("local-dir:"))
    folder = os.path.abspath(bundled_dir())
    if os.path.commonpath([folder, location]) == folder:
        return f"{BUNDLED_LABEL}: {os.path.relpath(location, folder)}"
    return reference


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


def caused_by_unreachable_hub(error: BaseException) -> bool:
    """Whether `error`, or an error it was raised from, means the Hub could not be reached (see UNREACHABLE_ERRORS)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if any(cls.__name__ in UNREACHABLE_ERRORS for cls in type(current).__mro__):
            return True
        current = current.__cause__ or current.__context__
    return False


def bundled_replaces(kind: str) -> bool:
    """Whether the bundled preset is offered where a model of `kind` is used (its bundled weights are present)."""
    _, names, _ = MODEL_KINDS.get(kind, ("", (), ""))
    return bool(names) and all(bundled_path(name) is not None for name in names)


def unavailable_message(model: str, kind: str, bundled_offered: bool) -> str:
    """The one sentence shown when `model` (of `kind`, a model cache kind) cannot be loaded because the Hub is
    unreachable and it is not cached: which model, why, and what to pick or set instead."""
    prefix, _, alternative = MODEL_KINDS.get(kind, ("", (), "use a local copy of it"))
    instead = f'pick "{BUNDLED_LABEL}" in the Model box' if bundled_offered else alternative
    return (
        f"Cannot load {prefix}{model}: the Hugging Face Hub is unreachable and the model is not in the local cache; "
        f"{instead} instead."
    )


BUNDLED_TABS = {  # which tabs default to the bundled models, by the bundled models present
    ("ddpm", "sd"): "every tab defaults",
    ("ddpm",): "the Unconditional, Color-guided and CLIP-guided tabs default",
    ("sd",): "the txt2img, img2img and Inpainting tabs default",
}


def status_text(device_type: str, on_space: bool, bundled: tuple[str, ...], offline: bool) -> str:
    """The one-line status under the title: where models run and what to do about it, naming only what this page
    offers. `bundled` lists the bundled models present ("ddpm", "sd"); `offline` means the Hub is unreachable."""
    running = f"Running on **{device_type.upper()}**"
    if offline:
        unreachable = f"{running}; the Hugging Face Hub is unreachable, so"
        if bundled:
            return f"{unreachable} {BUNDLED_TABS[bundled]} to **{BUNDLED_LABEL}**."
        return f"{unreachable} only models in the local cache or in local folders can be loaded."
    if device_type != "cpu":
        return f"{running}."
    options = ["use few steps"]
    if bundled:
        options.append(f"pick **{BUNDLED_LABEL}**")
    if on_space:
        options.append("move this Space (or your duplicate of it) to a GPU in Settings > Hardware")
    advice = ", ".join(options[:-1]) + (" or " if len(options) > 1 else "") + options[-1]
    return f"{running}: 256x256 models take seconds per step, so {advice}."
