"""How long a request may hold a ZeroGPU slice: a duration computed from the request, not a fixed 120 s, so short
jobs do not burn a visitor's daily quota and long ones are not killed. The duration reads the same measure of work
as the compute limits (`Request.work()`: megapixel-steps and cutout-steps), so everything the limits count (steps,
size and the model family's native size, CFG, guidance passes, particles, the hires fix, VAE passes) counts here
too. The per-unit costs are estimates for one slice with a margin (docs/zerogpu.md says which)."""

from __future__ import annotations

import math

MIN_SECONDS, MAX_SECONDS = 15, 300
OVERHEAD_SECONDS = 10.0  # moving the weights to the slice, the first CUDA call, PNG encoding
# One megapixel-step of each kind of model: a 256x256 DDPM UNet evaluation per image takes about 0.025 s; a
# 512x512 SD 1.5 step with both CFG halves about 0.07 s (SDXL at 1024 costs the same per pixel: docs/zerogpu.md).
PIXEL_MEGAPIXEL_STEP_SECONDS = 0.025 / (256 * 256 / 1e6)
SD_MEGAPIXEL_STEP_SECONDS = 0.07 / (512 * 512 / 1e6)
# Whatever the size, a model pass costs at least its kernel launches (a small UNet's time is mostly those).
PASS_STEP_SECONDS = 0.01
CUTOUT_STEP_SECONDS = 0.002  # one CLIP ViT-B forward and backward per cutout
SD_DECODER_PASS_STEPS = 2.0  # a VAE decode and its backward (color or CLIP guidance), in SD steps
SD_CLIP_STEP_FRACTION = 0.5  # CLIP guidance acts on the last half of the steps (stable_diffusion.py)
MARGIN = 1.5


def work_seconds(request, megapixel_step_seconds: float) -> int:
    """The duration asked for a checked request (its `work()`), with margin and bounds. The longest when the work
    cannot be measured: the model's configs unreadable here (no native size), or values validation would refuse
    (the duration is computed before the worker validates, which then refuses them)."""
    try:
        work = request.work()
        if work.native_pixels <= 0 or work.steps < 0 or work.batch_size < 1 or work.width * work.height <= 0:
            return MAX_SECONDS
        seconds = (
            work.megapixel_steps * megapixel_step_seconds
            + work.steps * work.passes * PASS_STEP_SECONDS
            + work.cutout_steps * CUTOUT_STEP_SECONDS
        )
    except Exception:  # noqa: BLE001 - whatever the request holds, a duration comes back
        return MAX_SECONDS
    if not math.isfinite(seconds) or seconds < 0:
        return MAX_SECONDS
    return int(min(MAX_SECONDS, max(MIN_SECONDS, math.ceil(OVERHEAD_SECONDS + MARGIN * seconds))))


def unconditional_seconds(request, *_args, **_kwargs) -> int:
    """ZeroGPU duration for a pixel-model Request."""
    return work_seconds(request, PIXEL_MEGAPIXEL_STEP_SECONDS)


def sd_seconds(request, *_args, **_kwargs) -> int:
    """ZeroGPU duration for a Stable Diffusion Request."""
    return work_seconds(request, SD_MEGAPIXEL_STEP_SECONDS)
