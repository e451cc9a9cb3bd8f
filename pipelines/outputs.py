"""Turn sampled tensors into PNG files that carry their generation parameters."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from pipelines.config import setting

DISPLAY_MIN_SIDE = 64  # images from smaller models (the 32x32 bundled emoji DDPM) are upscaled to this
METADATA_KEY = "studio-parameters"  # PNG text chunk holding the studio's full JSON parameters
INFOTEXT_KEY = "parameters"  # the chunk stable-diffusion-webui writes and its PNG Info, Forge, Civitai... read


@dataclass
class GenerationResult:
    """What every generating function returns: images, the parameters stored with each, and the info dict."""

    images: list[Image.Image] = field(default_factory=list)
    image_parameters: list[dict] = field(default_factory=list)
    info: dict = field(default_factory=dict)


def package(images: list[tuple[Image.Image, int, str]], info: dict) -> GenerationResult:
    """(image, seed, kind) triples and the final info dict -> a result whose per-image parameters are the info
    plus that image's own seed and kind."""
    return GenerationResult(
        images=[image for image, _, _ in images],
        image_parameters=[{**info, "seed": seed, "kind": kind} for _, seed, kind in images],
        info=info,
    )


def tensor_to_pil(images: torch.Tensor) -> list[Image.Image]:
    """(B, 3, H, W) in [-1, 1] -> list of RGB PIL images."""
    array = ((images.detach().float().cpu() + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(np.round(item * 255).astype(np.uint8)) for item in array]


def upscale_for_display(image: Image.Image, min_side: int = DISPLAY_MIN_SIDE) -> Image.Image:
    """`image` enlarged by the smallest integer factor that brings its shorter side to `min_side` (bicubic), or
    unchanged when it is already that large."""
    factor = -(-min_side // min(image.size))
    if factor <= 1:
        return image
    return image.resize((image.width * factor, image.height * factor), Image.Resampling.BICUBIC)


_private_output_dir: str | None = None
# What save_png writes: a folder of 32 hex digits holding the PNG under its download name (older versions wrote
# the PNG itself under such a name); nothing else in the output folder is ever swept.
OUTPUT_NAME = re.compile(r"[0-9a-f]{32}(\.png)?")
DOWNLOAD_WORDS = 6  # prompt words in a download's name
logger = logging.getLogger("studio")


def output_dir() -> str:
    """Folder for generated files: `STUDIO_OUTPUT_DIR`, else a private folder of this process in the system temp dir
    (created by `mkdtemp`: mode 0700, an unpredictable name, so no other user can read it or pre-place a link)."""
    global _private_output_dir
    folder = os.environ.get("STUDIO_OUTPUT_DIR", "").strip()
    if folder:
        os.makedirs(folder, exist_ok=True)
        return folder
    if _private_output_dir is None or not os.path.isdir(_private_output_dir):
        _private_output_dir = tempfile.mkdtemp(prefix="guided-diffusion-studio-")
    return _private_output_dir


def output_max_age() -> float:
    """Seconds a generated PNG is kept in the output folder: `STUDIO_OUTPUT_MAX_AGE`, default one hour (Gradio has
    copied it into its own cache, which `delete_cache` empties, long before)."""
    return setting("STUDIO_OUTPUT_MAX_AGE", 3600.0, minimum=60.0, kind=float)


def output_max_files() -> int:
    """PNGs kept in the output folder at most: `STUDIO_OUTPUT_MAX_FILES`, default 500 (the oldest go first), so a
    burst of requests cannot fill the disk within the age limit."""
    return setting("STUDIO_OUTPUT_MAX_FILES", 500, minimum=16)


def _output_entry(entry: os.DirEntry) -> tuple[float, list[str]] | None:
    """(modified time, files) of one of save_png's outputs in the folder, None for anything else."""
    if not OUTPUT_NAME.fullmatch(entry.name):
        return None
    if entry.name.endswith(".png"):
        return (
            (entry.stat(follow_symlinks=False).st_mtime, [entry.path]) if entry.is_file(follow_symlinks=False) else None
        )
    if not entry.is_dir(follow_symlinks=False):
        return None
    with os.scandir(entry.path) as inside:
        files = [
            item for item in inside if item.is_file(follow_symlinks=False) and item.name.endswith((".png", ".zip"))
        ]
    if not files:
        return (entry.stat(follow_symlinks=False).st_mtime, [])
    return max(item.stat(follow_symlinks=False).st_mtime for item in files), [item.path for item in files]


def sweep_outputs(folder: str, max_age: float, now: float | None = None, max_files: int | None = None) -> int:
    """Delete this app's outputs in `folder` (OUTPUT_NAME) older than `max_age` seconds, then the oldest beyond
    `max_files` (None: no count limit); return how many were deleted."""
    now = time.time() if now is None else now
    kept: list[tuple[float, str, list[str]]] = []
    removed = 0
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                try:
                    found = _output_entry(entry)
                except FileNotFoundError:  # another request swept it first
                    continue
                if found is not None:
                    kept.append((found[0], entry.path, found[1]))
        kept.sort()
        excess = max(0, len(kept) - max_files) if max_files is not None else 0
        for index, (modified, path, files) in enumerate(kept):
            if index < excess or now - modified > max_age:
                for file in files:
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(file)
                if path not in files:
                    with contextlib.suppress(OSError):
                        os.rmdir(path)
                removed += 1
    except OSError as error:  # a sweep that fails must never lose a finished generation
        logger.warning("could not sweep %s: %s", folder, error)
    return removed


def download_name(parameters: dict[str, Any]) -> str:
    """What a PNG is called when downloaded: `<tab>-<seed>-<prompt words>.png` (a sweep's grid starts `sweep-`)."""
    from pipelines.infotext import pixel_task

    tab = parameters.get("task") or pixel_task(parameters)
    words = re.findall(r"[a-z0-9]+", str(parameters.get("prompt") or parameters.get("clip_prompt") or "").lower())
    parts = ["sweep" if parameters.get("kind") == "sweep grid" else "", tab, str(parameters.get("seed", ""))]
    parts.append("-".join(words[:DOWNLOAD_WORDS])[:60].strip("-"))
    return "-".join(part for part in parts if part) + ".png"


def _new_output(name: str, folder: str | None) -> str:
    """A fresh path for a file called `name` in its own folder of the output folder, after a sweep of old ones."""
    folder = folder or output_dir()
    sweep_outputs(folder, output_max_age(), max_files=output_max_files() - 1)
    own = os.path.join(folder, uuid.uuid4().hex)
    os.mkdir(own, 0o700)
    return os.path.join(own, name)


def save_png(image: Image.Image, parameters: dict[str, Any], folder: str | None = None) -> str:
    """Write `image` as PNG with `parameters` in two text chunks, stable-diffusion-webui's `parameters` text and the
    studio's full JSON, named for what it is (`download_name`) in a folder of its own; return the path. Outputs
    older than `output_max_age()`, and the oldest beyond `output_max_files()` less one, are deleted first: the
    folder stays bounded."""
    path = _new_output(download_name(parameters), folder)
    write_png(image, parameters, path)
    return path


def write_png(image: Image.Image, parameters: dict[str, Any], path: str) -> None:
    """Write `image` at `path` as PNG with `parameters` in stable-diffusion-webui's `parameters` text (iTXt: UTF-8,
    as prompts need) and in the studio's JSON."""
    from pipelines.infotext import infotext

    info = PngInfo()
    info.add_itxt(INFOTEXT_KEY, infotext(parameters, image.size))
    info.add_text(METADATA_KEY, json.dumps(parameters, sort_keys=True))
    image.save(path, format="PNG", pnginfo=info)


def zip_outputs(paths: list[str], name: str, folder: str | None = None) -> str:
    """The files at `paths` in one zip archive called `name` (stored, not compressed: PNGs are); its path. Two
    files of the same name get a counter."""
    import zipfile

    path = _new_output(name, folder)
    seen: dict[str, int] = {}
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for file in paths:
            base, extension = os.path.splitext(os.path.basename(file))
            seen[base] = seen.get(base, 0) + 1
            archive.write(file, base + (f"-{seen[base]}" if seen[base] > 1 else "") + extension)
    return path


def read_parameters(path: str) -> dict[str, Any]:
    """The parameters stored by `save_png` in a PNG file."""
    with Image.open(path) as image:
        return json.loads(image.text[METADATA_KEY])


def image_parameters(image: Image.Image) -> dict[str, Any]:
    """What an image says about how it was made: {"source": "studio", "parameters": the studio's JSON}, or
    {"source": "stable-diffusion-webui", "parameters": the fields of its `parameters` text, "text": the text}, or
    {"source": "none"} when it carries neither."""
    from pipelines.infotext import parse_infotext

    chunks = getattr(image, "text", None) or image.info or {}
    if isinstance(chunks.get(METADATA_KEY), str):
        try:
            return {"source": "studio", "parameters": json.loads(chunks[METADATA_KEY])}
        except ValueError:
            pass  # damaged: fall back to the parameters text
    text = chunks.get(INFOTEXT_KEY)
    if isinstance(text, str) and text.strip():
        return {"source": "stable-diffusion-webui", "parameters": parse_infotext(text), "text": text}
    return {"source": "none"}
