"""How long a request may hold a ZeroGPU slice: a duration computed from the request, not a fixed 120 s, so short
jobs do not burn a visitor's daily quota and long ones are not killed. The per-step costs are estimates for one
slice with a margin (docs/zerogpu.md says which)."""

from __future__ import annotations

import math

from guidance.sampler import strength_steps
from pipelines.params import PIXEL, SD

MIN_SECONDS, MAX_SECONDS = 15, 300
OVERHEAD_SECONDS = 10.0  # moving the weights to the slice, the first CUDA call, PNG encoding
UNET_IMAGE_STEP_SECONDS = 0.025  # one 256x256 DDPM UNet evaluation per image
CUTOUT_STEP_SECONDS = 0.002  # one CLIP ViT-B forward and backward per cutout
SD_IMAGE_STEP_SECONDS = 0.07  # one 512x512 SD 1.5 step per image, both CFG halves
SD_DECODER_PASS_STEPS = 2.0  # a VAE decode and its backward (color or CLIP guidance), in SD steps
SD_CLIP_STEP_FRACTION = 0.5  # CLIP guidance acts on the last half of the steps (stable_diffusion.py)
MARGIN = 1.5
SD_NATIVE = 512  # the size the SD step cost is for, and what a native-size request is counted as


def _number(value, default: float) -> float:
    """`value` as a finite float, or `default` (the duration is computed before validation refuses bad input: a
    missing or bad value counts as its keyword's largest)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if math.isfinite(number) and number >= 0 else default


def _seconds(work: float) -> int:
    """Estimated seconds of GPU work -> the duration asked for, with margin and bounds."""
    return int(min(MAX_SECONDS, max(MIN_SECONDS, math.ceil(OVERHEAD_SECONDS + MARGIN * work))))


def _clip_guided(request) -> bool:
    """Whether a request asks for CLIP guidance (toward a text, a reference picture or both)."""
    scales = (getattr(request, "clip_scale", 0), getattr(request, "clip_image_scale", 0))
    return any(_number(scale, 0) > 0 for scale in scales)


def unconditional_seconds(request, *_args, **_kwargs) -> int:
    """ZeroGPU duration for a Request: steps x batch x (UNet, gradient and cutouts), both runs if compared."""
    steps = _number(getattr(request, "steps", None), PIXEL["steps"].high)
    batch = _number(getattr(request, "batch_size", None), PIXEL["batch_size"].high)
    per_image_step = UNET_IMAGE_STEP_SECONDS
    clip_guided = _clip_guided(request)
    guided = _number(getattr(request, "color_scale", 0), 0) > 0 or clip_guided
    if guided and getattr(request, "gradient_method", "x0") == "unet":
        per_image_step *= 3  # a backward pass through the UNet at every step
    if clip_guided:
        per_image_step += CUTOUT_STEP_SECONDS * _number(getattr(request, "cuts", None), PIXEL["cuts"].high)
    if guided:
        # each guided step taken that many times
        per_image_step *= _number(getattr(request, "recurrence", 1), PIXEL["recurrence"].high)
    if guided:  # each image run as that many particles
        per_image_step *= _number(getattr(request, "particles", 1), PIXEL["particles"].high)
    runs = 2 if guided and getattr(request, "compare", False) else 1
    return _seconds(runs * steps * batch * per_image_step)


def sd_seconds(request, *_args, **_kwargs) -> int:
    """ZeroGPU duration for an Request: denoising steps x batch x size relative to 512x512, with the guidance
    passes (VAE decoder forward and backward, CLIP cutouts) on the steps they act on."""
    steps = _number(getattr(request, "steps", None), SD["steps"].high)
    if getattr(request, "task", "txt2img") != "txt2img":
        steps = strength_steps(int(steps), min(1.0, _number(getattr(request, "strength", None), 1.0)))
    batch = _number(getattr(request, "batch_size", None), SD["batch_size"].high)
    width = _number(getattr(request, "width", None), 0) or SD_NATIVE
    height = _number(getattr(request, "height", None), 0) or SD_NATIVE
    per_step = 1.0
    if _number(getattr(request, "color_scale", 0), 0) > 0:
        per_step += SD_DECODER_PASS_STEPS  # the cheap map costs nothing, but "vae" may be asked for
    if _clip_guided(request):
        cutouts = CUTOUT_STEP_SECONDS * _number(getattr(request, "cuts", None), SD["cuts"].high) / SD_IMAGE_STEP_SECONDS
        per_step += SD_CLIP_STEP_FRACTION * (SD_DECODER_PASS_STEPS + cutouts)
    if _number(getattr(request, "color_scale", 0), 0) > 0 or _clip_guided(request):  # each image as particles
        batch *= _number(getattr(request, "particles", 1), SD["particles"].high)
    return _seconds(steps * batch * per_step * SD_IMAGE_STEP_SECONDS * (width * height) / SD_NATIVE**2)
