"""Per-request compute limits, set by environment variables and checked before any model loads.

Each refusal names the parameter, its value, the limit and the variable that sets it. The product limit counts
*megapixel-steps*: denoising steps x images x output pixels / 1e6, times the passes each step takes (half for a
Stable Diffusion step without classifier-free guidance, more for an unguided comparison, a gradient through the
UNet, recurrence, a VAE decoder in the guidance), plus the VAE passes outside the steps (a decode of each output,
an encode of each input), all scaled up for a size above the model's native one (attention grows with the square
of the number of pixels). CLIP cutouts get their own count, cutout-steps (steps x images x cutouts x takes). A
request of several jobs (batches, sweep cells) is checked as a whole as well. `docs/limits.md` gives the
measurements behind the defaults; `pipelines.budget` turns the same counts into a ZeroGPU duration.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from pipelines.validation import in_page, plain_number

# With an accelerator (CUDA, or ZeroGPU whose main process has none): about 45 s of one H200 slice by
# `pipelines.budget`'s estimates. On a CPU: about a minute of the bundled models on 2 cores (docs/limits.md).
GPU_MEGAPIXEL_STEPS = 150.0
CPU_MEGAPIXEL_STEPS = 3.0
GPU_CUTOUT_STEPS = 20_000
CPU_CUTOUT_STEPS = 3_600
# Cost per pixel grows by 1/ATTENTION_GROWTH of each native area above the native size (attention over more tokens).
ATTENTION_GROWTH = 9.0
CODER_PASS_STEPS = 1.0  # one VAE pass (encode or decode) of an image counts as one denoising step of it


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


def _env_number(name: str, kind: type):
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
        steps=_env_number(ENV["steps"], int),
        batch_size=_env_number(ENV["batch_size"], int),
        pixels=_env_number(ENV["pixels"], int),
        cuts=_env_number(ENV["cuts"], int),
        megapixel_steps=_env_number(ENV["megapixel_steps"], float)
        or (GPU_MEGAPIXEL_STEPS if accelerated else CPU_MEGAPIXEL_STEPS),
        cutout_steps=_env_number(ENV["cutout_steps"], int) or (GPU_CUTOUT_STEPS if accelerated else CPU_CUTOUT_STEPS),
    )


def server_limits() -> Limits:
    """This process's limits: the accelerator defaults on CUDA or ZeroGPU, the CPU defaults elsewhere."""
    from pipelines.device import default_device
    from pipelines.gpu import on_zero_gpu

    return current_limits(accelerated=on_zero_gpu() or default_device().type != "cpu")


def above(value: float, limit: float) -> str:
    """`value` with as many decimals as it takes to read above `limit`: 7.004, not 7, against a limit of 7."""
    for decimals in range(1, 16):
        if float(written := f"{value:.{decimals}f}") > limit:
            return written.rstrip("0").rstrip(".")
    return repr(value)


def _refuse_above(name: str, value: float, limit, what: str | None = None) -> None:
    """ValueError when `value` exceeds `limit` (None: no limit); `what` may hold `{value}` for the value."""
    if limit is not None and value > limit:
        shown = (what or f"{name} {{value}}").format(value=above(value, limit))
        raise ValueError(
            f"{shown} is above this server's limit of {plain_number(limit)} (set by {ENV[name]}){in_page(name)}"
        )


@dataclass(frozen=True)
class Work:
    """What one job asks of the device, in the units the limits use."""

    steps: int  # denoising steps actually run (img2img: steps x strength)
    batch_size: int
    width: int
    height: int
    cuts: int = 0  # CLIP cutouts per image and step (0: no CLIP guidance)
    passes: float = 1.0  # model passes per step (SD: 1 is a CFG step, 0.5 one without): +1 for a comparison, x3 for
    # a gradient through the UNet, x takes...
    takes: int = 1  # times each guided step is taken (recurrence): multiplies the cutouts too
    native_pixels: int = 0  # the pixels of the model's native size (0: unknown, no growth counted)
    particles: int = 1  # rows per image (guidance.particles): multiplies everything per image
    coder_passes: float = 0.0  # VAE passes per image outside the steps (a decode of each output, an encode of an input)
    size_name: str = "width x height"  # what the size is, in a refusal (the hires fix's output is larger)

    @property
    def size_factor(self) -> float:
        """How much more a pixel costs at this size than at the model's native size."""
        if not self.native_pixels:
            return 1.0
        return 1.0 + max(0.0, self.width * self.height / self.native_pixels - 1.0) / ATTENTION_GROWTH

    @property
    def megapixel_steps(self) -> float:
        per_image = self.steps * self.passes + self.coder_passes * CODER_PASS_STEPS
        rows = self.batch_size * self.particles
        return per_image * rows * self.width * self.height * self.size_factor / 1e6

    @property
    def cutout_steps(self) -> int:
        return self.steps * self.batch_size * self.particles * self.cuts * self.takes

    def describe(self) -> str:
        """The factors of megapixel_steps, as a refusal lists them."""
        parts = [f"steps {self.steps}", f"batch_size {self.batch_size}", f"{self.width}x{self.height} px"]
        if self.particles != 1:
            parts.insert(2, f"particles {self.particles}")
        if self.passes != 1:
            parts.append(f"{plain_number(round(self.passes, 2))} passes")
        if self.size_factor > 1:
            parts.append(f"{plain_number(round(self.size_factor, 2))} for a size above the model's native one")
        text = " x ".join(parts)
        coder = f", plus {plain_number(self.coder_passes)} VAE pass{'es' * (self.coder_passes != 1)} per image"
        return text + (coder if self.coder_passes else "")


def check_work(work: Work, limits: Limits) -> None:
    """ValueError naming the first parameter or product of `work` above `limits`."""
    _refuse_above("steps", work.steps, limits.steps)
    _refuse_above("batch_size", work.batch_size, limits.batch_size)
    _refuse_above("pixels", work.width * work.height, limits.pixels, f"{work.size_name} {work.width}x{work.height} px")
    if work.cuts:
        _refuse_above("cuts", work.cuts, limits.cuts)
    _refuse_above(
        "megapixel_steps",
        work.megapixel_steps,
        limits.megapixel_steps,
        f"this request's {{value}} megapixel-steps ({work.describe()}; lower steps, batch_size or the size)",
    )
    if work.cuts:
        takes = f" x {work.takes} takes" if work.takes != 1 else ""
        particles = f" x particles {work.particles}" if work.particles != 1 else ""
        _refuse_above(
            "cutout_steps",
            work.cutout_steps,
            limits.cutout_steps,
            f"this request's {{value}} cutout-steps (steps {work.steps} x batch_size {work.batch_size}{particles} x "
            f"cuts {work.cuts}{takes}; lower cuts, steps or batch_size)",
        )


def check_total(works: list[Work], limits: Limits, jobs: str, lower: str) -> None:
    """ValueError when the jobs of one request (`jobs`: "batches", "sweep cells"), each within the limits, exceed
    them together; `lower` says what to lower."""
    if len(works) < 2:
        return
    what = f"this request's {{value}} {{unit}} ({len(works)} {jobs} together; lower {lower})"
    total = sum(work.megapixel_steps for work in works)
    _refuse_above("megapixel_steps", total, limits.megapixel_steps, what.replace("{unit}", "megapixel-steps"))
    cutouts = sum(work.cutout_steps for work in works)
    _refuse_above("cutout_steps", cutouts, limits.cutout_steps, what.replace("{unit}", "cutout-steps"))
