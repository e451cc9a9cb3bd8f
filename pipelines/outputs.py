"""Turn sampled tensors into PNG files that carry their generation parameters."""

from __future__ import annotations

import contextlib
import json
import logging
import math
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

from guidance.colors import shown
from pipelines.config import setting
from pipelines.limits import above
from pipelines.validation import MAX_TEXT

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


def _output_entry(entry: os.DirEntry) -> tuple[float, list[str], int] | None:
    """(modified time, files, bytes) of one of save_png's outputs in the folder, None for anything else."""
    if not OUTPUT_NAME.fullmatch(entry.name):
        return None
    if entry.name.endswith(".png"):
        if not entry.is_file(follow_symlinks=False):
            return None
        stat = entry.stat(follow_symlinks=False)
        return stat.st_mtime, [entry.path], stat.st_size
    if not entry.is_dir(follow_symlinks=False):
        return None
    with os.scandir(entry.path) as inside:
        files = [
            (item.path, item.stat(follow_symlinks=False))
            for item in inside
            if item.is_file(follow_symlinks=False) and item.name.endswith((".png", ".zip"))
        ]
    if not files:
        return entry.stat(follow_symlinks=False).st_mtime, [], 0
    modified = max(stat.st_mtime for _, stat in files)
    return modified, [path for path, _ in files], sum(stat.st_size for _, stat in files)


def sweep_outputs(
    folder: str,
    max_age: float,
    now: float | None = None,
    max_files: int | None = None,
    max_bytes: int | None = None,
) -> int:
    """Delete this app's outputs in `folder` (OUTPUT_NAME) older than `max_age` seconds, then the oldest beyond
    `max_files` or beyond `max_bytes` in all (None: no such limit); return how many were deleted."""
    now = time.time() if now is None else now
    kept: list[tuple[float, str, list[str], int]] = []
    removed = 0
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                try:
                    found = _output_entry(entry)
                except FileNotFoundError:  # another request swept it first
                    continue
                if found is not None:
                    kept.append((found[0], entry.path, found[1], found[2]))
        kept.sort()
        excess = max(0, len(kept) - max_files) if max_files is not None else 0
        if max_bytes is not None:  # the oldest go until the rest fit
            total = sum(size for *_, size in kept[excess:])
            while excess < len(kept) and total > max_bytes:
                total -= kept[excess][3]
                excess += 1
        for index, (modified, path, files, _) in enumerate(kept):
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


def output_max_megabytes() -> int:
    """Megabytes the output folder holds at most: `STUDIO_OUTPUT_MAX_MB`, default 1024 (the oldest outputs go first)."""
    return setting("STUDIO_OUTPUT_MAX_MB", 1024, minimum=16)


def _new_output(name: str, folder: str | None, size: int = 0, folder_max_bytes: int | None = None) -> str:
    """A fresh path for a file called `name` (about `size` bytes) in its own folder of `folder` (the output folder by
    default), after a sweep of old ones that leaves room for it within `folder_max_bytes` (default
    `output_max_megabytes()`)."""
    folder = folder or output_dir()
    os.makedirs(folder, mode=0o700, exist_ok=True)
    room = (folder_max_bytes or output_max_megabytes() * 2**20) - size
    sweep_outputs(folder, output_max_age(), max_files=output_max_files() - 1, max_bytes=max(0, room))
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


ZIP_MAX_MB = "STUDIO_ZIP_MAX_MB"


def zip_max_megabytes() -> int:
    """Largest zip of a gallery: `STUDIO_ZIP_MAX_MB`, default 256."""
    return setting(ZIP_MAX_MB, 256, minimum=1)


def zip_outputs(
    paths: list[str],
    name: str,
    folder: str | None = None,
    max_files: int | None = None,
    folder_max_bytes: int | None = None,
) -> str:
    """The files at `paths` (each once, however often listed) in one zip archive called `name` (stored, not
    compressed: PNGs are) in `folder` (the output folder by default, which then keeps at most `folder_max_bytes`);
    its path. Two files of the same name get a counter. ValueError for more than `max_files` files or more than
    `zip_max_megabytes()` in all, before anything is written."""
    import zipfile

    paths = list(dict.fromkeys(os.path.realpath(file) for file in paths))
    if max_files is not None and len(paths) > max_files:
        raise ValueError(f"a zip holds at most {max_files} images, got {len(paths)}")
    size = sum(os.path.getsize(file) for file in paths)
    if size > zip_max_megabytes() * 2**20:
        raise ValueError(
            f"these images add up to {above(size / 2**20, zip_max_megabytes())} MB, above this server's limit of "
            f"{zip_max_megabytes()} MB "
            f"for a zip (set by {ZIP_MAX_MB}): download them one by one"
        )
    path = _new_output(name, folder, size, folder_max_bytes)
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


# Longest text chunks read from a PNG, in characters: room for the longest the studio writes (prompt, negative prompt
# and CLIP prompt of MAX_TEXT characters each, a character taking at most 6 in the parameters text, a control
# character quoted as \uXXXX, and 12 in the JSON, an emoji escaped as two \uXXXX), plus the other keys. A longer
# chunk is named in "not_used", never parsed.
MAX_INFOTEXT_CHARS = 3 * 6 * MAX_TEXT + 20_000
MAX_STUDIO_JSON_CHARS = 3 * 12 * MAX_TEXT + 40_000
MAX_JSON_DEPTH = 16  # nesting kept of a PNG's JSON (the studio writes 3 levels; Gradio's orjson stops at 254)
_LEFT_OUT = object()  # json_safe's answer for a value it leaves out


def image_parameters(image: Image.Image) -> dict[str, Any]:
    """What an image says about how it was made: {"source": "studio", "parameters": the studio's JSON}, or
    {"source": "stable-diffusion-webui", "parameters": the fields of its `parameters` text, "text": the text}, or
    {"source": "none"} when it carries neither; plus "not_used", what could not be read, when something could not
    (a chunk too long, damaged or not an object; a value Gradio's JSON cannot carry). Whatever the chunks hold, the
    answer is JSON that Gradio can send."""
    from pipelines.infotext import parse_infotext

    not_used: list[str] = []
    chunks = png_text(image, not_used)
    studio = studio_json(chunks, not_used)
    text = None if studio is not None else chunk_text(chunks, INFOTEXT_KEY, MAX_INFOTEXT_CHARS, not_used)
    if studio is not None:
        read = {"source": "studio", "parameters": studio}
    elif text is not None:
        read = {"source": "stable-diffusion-webui", "parameters": json_safe(parse_infotext(text), "", not_used)}
        read["text"] = text
    else:
        read = {"source": "none"}
    return read | ({"not_used": not_used} if not_used else {})


def png_text(image: Image.Image, not_used: list[str]) -> dict:
    """An image's text chunks; only those before its pixels when a chunk after them cannot be read."""
    try:
        return getattr(image, "text", None) or image.info or {}
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        not_used.append(f"PNG text after the image data: not read ({shown(str(error))})")
        return image.info or {}


def chunk_text(chunks: dict, key: str, limit: int, not_used: list[str]) -> str | None:
    """The text of chunk `key`; None where there is none, where it is blank, or where it is longer than `limit`
    characters (then named in `not_used`: it is not parsed)."""
    text = chunks.get(key)
    if not isinstance(text, str) or not text.strip():
        return None
    if len(text) > limit:
        not_used.append(f"{key}: not read: too long ({len(text):,} characters, above the limit of {limit:,})")
        return None
    return text


def studio_json(chunks: dict, not_used: list[str]) -> dict | None:
    """The studio's JSON chunk as a JSON-safe object (`json_safe`); None, said in `not_used`, when it is too long,
    not JSON, nested too deep for the decoder, or not an object."""
    text = chunk_text(chunks, METADATA_KEY, MAX_STUDIO_JSON_CHARS, not_used)
    if text is None:
        return None
    try:
        parsed = json.loads(text)
    except RecursionError:
        not_used.append(f"{METADATA_KEY}: not read: nested too deep")
        return None
    except ValueError as error:
        not_used.append(f"{METADATA_KEY}: not read: not JSON ({shown(str(error))})")
        return None
    if not isinstance(parsed, dict):
        not_used.append(f"{METADATA_KEY}: not read: {shown(text.strip())} is not a JSON object")
        return None
    return json_safe(parsed, "", not_used)


def json_safe(value: Any, key: str, not_used: list[str], depth: int = 0) -> Any:
    """`value` less what Gradio's JSON (orjson) or the page cannot carry, each left-out value named by its path
    from `key` in `not_used`: a lone surrogate, an integer beyond 64 bits, NaN or infinity, nesting deeper than
    MAX_JSON_DEPTH. _LEFT_OUT when `value` itself is left out."""
    if isinstance(value, (dict, list)) and depth >= MAX_JSON_DEPTH:
        not_used.append(f"{key}: nested more than {MAX_JSON_DEPTH} deep")
        return _LEFT_OUT
    if isinstance(value, dict):
        kept = {}
        for name, item in value.items():
            label = f"{key}.{key_label(name)}" if key else key_label(name)
            if not valid_unicode(name):
                not_used.append(f"{label}: the key has a lone surrogate (not valid Unicode)")
            elif (safe := json_safe(item, label, not_used, depth + 1)) is not _LEFT_OUT:
                kept[name] = safe
        return kept
    if isinstance(value, list):
        items = (json_safe(item, f"{key}[{index}]", not_used, depth + 1) for index, item in enumerate(value))
        return [item for item in items if item is not _LEFT_OUT]
    problem = json_problem(value)
    if problem:
        not_used.append(f"{key}: {problem}")
        return _LEFT_OUT
    return value


def json_problem(value: Any) -> str | None:
    """Why Gradio's JSON (orjson) or the page cannot carry a scalar `value`; None when it can."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return None if -(2**63) <= value < 2**63 else f"{shown(value)} is beyond 64 bits"
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{value} is not a finite number"
    if isinstance(value, str):
        return None if valid_unicode(value) else f"{shown(value)} has a lone surrogate (not valid Unicode)"
    return f"a {type(value).__name__} is not JSON"


def valid_unicode(text: str) -> bool:
    """Whether `text` encodes as UTF-8 (a lone surrogate, which JSON's \\ud800 escape makes, does not)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def key_label(name: str) -> str:
    """A JSON key as a message names it: a lone surrogate escaped, cut to a few dozen characters."""
    label = name.encode("utf-8", "backslashreplace").decode("utf-8")
    return label if len(label) <= 40 else label[:39] + "…"
