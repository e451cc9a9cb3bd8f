"""Per-request compute limits, set by environment variables and checked before any model loads.

Each refusal names the parameter, its value, the limit and the variable that sets it. The product limit counts
*megapixel-steps*: denoising steps x images x output pixels / 1e6, doubled for `compare` and tripled for a
gradient through the UNet. It tracks cost across model families within about 1.5x: a 256x256 DDPM UNet
(celebahq) and SD 1.5 at 512x512 both cost about 0.3 s per megapixel-step on one ZeroGPU slice (the estimates in
`pipelines.budget`). CLIP cutouts get their own count, cutout-steps (steps x images x cutouts).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from pipelines.validation import in_page, plain_number

# Defaults with an accelerator (CUDA, or ZeroGPU whose main process has none): 150 megapixel-steps is SD 1.5 at
# 512x512, 4 images, 143 steps, or celebahq-256, 2 images, 1000 steps; about 45 s of one H200 slice, about 3 minutes
# of a T4. On a CPU: 7. Measured on 2 cores (AMD EPYC): one SD 1.5 UNet step with CFG takes 14.7 s at 512x512
# (56 s per megapixel-step) and 92 s at 1024x1024; the bundled 32 px DDPM 0.025 s per image-step (24 s per
# megapixel-step). So 7 admits SD 1.5's default request (512x512, 25 steps: 6.6, about 6 minutes) and the bundled
# DDPM at 1000 steps for 6 images (about 2.5 minutes), and refuses more.
GPU_MEGAPIXEL_STEPS = 150.0
CPU_MEGAPIXEL_STEPS = 7.0
GPU_CUTOUT_STEPS = 20_000  # 4 cutouts x 1000 steps x 4 images, or 64 x 50 x 6
CPU_CUTOUT_STEPS = 20_000  # a cutout of the bundled CLIP is cheap; a ViT-B-32 on a CPU is limited by the steps


@dataclass(frozen=True)
class Limits:
    """This server's limits: each None means only the UI's hard range applies."""

    steps: int | None = None
    batch_size: int | None = None
    pixels: int | None = None  # width x height of one output image
    cuts: int | None = None
    megapixel_steps: float = GPU_MEGAPIXEL_STEPS
    cutout_steps: int = GPU_CUTOUT_STEPS


ENV = {
    "steps": "STUDIO_MAX_STEPS",
    "batch_size": "STUDIO_MAX_BATCH",
    "pixels": "STUDIO_MAX_PIXELS",
    "cuts": "STUDIO_MAX_CUTS",
    "megapixel_steps": "STUDIO_MAX_MEGAPIXEL_STEPS",
    "cutout_steps": "STUDIO_MAX_CUTOUT_STEPS",
}


def _envplain_number(name: str, kind: type):
    """The positive number in environment variable `name`, None when unset; ValueError naming it when invalid."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive {'integer' if kind is int else 'number'}, got {raw[:40]!r}")
    return value


def current_limits(accelerated: bool) -> Limits:
    """The limits from the environment, with the defaults for a server with (or without) an accelerator."""
    return Limits(
        steps=_envplain_number(ENV["steps"], int),
        batch_size=_envplain_number(ENV["batch_size"], int),
        pixels=_envplain_number(ENV["pixels"], int),
        cuts=_envplain_number(ENV["cuts"], int),
        megapixel_steps=_envplain_number(ENV["megapixel_steps"], float)
        or (GPU_MEGAPIXEL_STEPS if accelerated else CPU_MEGAPIXEL_STEPS),
        cutout_steps=_envplain_number(ENV["cutout_steps"], int)
        or (GPU_CUTOUT_STEPS if accelerated else CPU_CUTOUT_STEPS),
    )


def server_limits() -> Limits:
    """This process's limits: the accelerator defaults on CUDA or ZeroGPU, the CPU defaults elsewhere."""
    from pipelines.device import default_device
    from pipelines.gpu import on_zero_gpu

    return current_limits(accelerated=on_zero_gpu() or default_device().type != "cpu")


def _refuse_above(name: str, value: float, limit, what: str | None = None) -> None:
    """ValueError when `value` exceeds `limit` (None: no limit)."""
    if limit is not None and value > limit:
        shown = what or f"{name} {plain_number(value)}"
        raise ValueError(
            f"{shown} is above this server's limit of {plain_number(limit)} (set by {ENV[name]}){in_page(name)}"
        )


@dataclass(frozen=True)
class Work:
    """What one request asks of the accelerator, in the units the limits use."""

    steps: int  # denoising steps actually run (img2img: steps x strength)
    batch_size: int
    width: int
    height: int
    cuts: int = 0  # CLIP cutouts per image and step (0: no CLIP guidance)
    passes: float = 1.0  # +1 when an unguided comparison also runs, x3 for a gradient through the UNet, x recurrence

    @property
    def megapixel_steps(self) -> float:
        return self.steps * self.batch_size * self.width * self.height * self.passes / 1e6

    @property
    def cutout_steps(self) -> int:
        return self.steps * self.batch_size * self.cuts


def check_work(work: Work, limits: Limits) -> None:
    """ValueError naming the first parameter or product of `work` above `limits`."""
    _refuse_above("steps", work.steps, limits.steps)
    _refuse_above("batch_size", work.batch_size, limits.batch_size)
    _refuse_above("pixels", work.width * work.height, limits.pixels, f"width x height {work.width}x{work.height} px")
    if work.cuts:
        _refuse_above("cuts", work.cuts, limits.cuts)
    passes = f" x {plain_number(work.passes)} passes" if work.passes != 1 else ""
    _refuse_above(
        "megapixel_steps",
        work.megapixel_steps,
        limits.megapixel_steps,
        f"this request's {plain_number(round(work.megapixel_steps, 1))} megapixel-steps (steps {work.steps} x "
        f"batch_size {work.batch_size} x {work.width}x{work.height} px{passes}; lower steps, batch_size or the size)",
    )
    if work.cuts:
        _refuse_above(
            "cutout_steps",
            work.cutout_steps,
            limits.cutout_steps,
            f"this request's {work.cutout_steps} cutout-steps (steps {work.steps} x batch_size {work.batch_size} x "
            f"cuts {work.cuts}; lower cuts, steps or batch_size)",
        )
