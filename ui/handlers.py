"""The six generation endpoints. Thin: each names its keywords (the API's), builds the request, and runs it."""

from __future__ import annotations

import gradio as gr

from pipelines import stable_diffusion as sd
from pipelines import unconditional as uncond
from ui.jobs import HANDLER_ONLY, run_job


def sampling_request(arguments: dict) -> uncond.SamplingRequest:
    """A SamplingRequest from a handler's arguments, which are named like its fields (and the API's keywords)."""
    fields = {key: value for key, value in arguments.items() if key not in HANDLER_ONLY}
    return uncond.SamplingRequest(**fields)


def unconditional(
    model: str,
    scheduler: str,
    steps: int,
    batch_size: int,
    seed: int,
    eta: float = uncond.DEFAULT_ETA,
    batch_count: int = 1,
    previews: bool = True,
    request: gr.Request = None,
    progress: gr.Progress = gr.Progress(),
):
    """Sample images from an unconditional diffusion model."""
    job = sampling_request(locals())
    yield from run_job(uncond.generate_steps, uncond.validate, job, previews, request, progress, batch_count)


def color_guided(
    model: str,
    scheduler: str,
    steps: int,
    batch_size: int,
    seed: int,
    color: str,
    color_scale: float,
    compare: bool = False,
    eta: float = uncond.DEFAULT_ETA,
    gradient_method: str = "x0",
    batch_count: int = 1,
    previews: bool = True,
    request: gr.Request = None,
    progress: gr.Progress = gr.Progress(),
):
    """Sample images pulled toward a color by a loss on the predicted clean image."""
    job = sampling_request(locals())
    yield from run_job(uncond.generate_steps, uncond.validate, job, previews, request, progress, batch_count)


def clip_guided(
    model: str,
    scheduler: str,
    steps: int,
    batch_size: int,
    seed: int,
    prompt: str,
    clip_scale: float,
    cuts: int,
    color: str = "#ff8800",
    color_scale: float = 0.0,
    compare: bool = False,
    eta: float = uncond.DEFAULT_ETA,
    gradient_method: str = "x0",
    clip_image=None,
    clip_image_scale: float = 0.0,
    batch_count: int = 1,
    previews: bool = True,
    request: gr.Request = None,
    progress: gr.Progress = gr.Progress(),
):
    """Sample images pulled by CLIP toward a text prompt and/or a reference picture (clip_image, clip_image_scale),
    optionally toward a color at the same time."""
    job = sampling_request(locals())
    yield from run_job(uncond.generate_steps, uncond.validate, job, previews, request, progress, batch_count)


def sd_request(task: str, arguments: dict) -> sd.SDRequest:
    """An SDRequest from a handler's arguments, which are named like its fields (and the API's keywords)."""
    fields = {key: value for key, value in arguments.items() if key not in HANDLER_ONLY}
    return sd.SDRequest(task=task, **fields)


def txt2img(
    prompt: str,
    negative_prompt: str,
    scheduler: str,
    steps: int,
    guidance_scale: float,
    width: int,
    height: int,
    batch_size: int,
    seed: int,
    model: str | None = None,
    color: str = "#1e90ff",
    color_scale: float = 0.0,
    color_decoder: str = "auto",
    clip_prompt: str = "",
    clip_scale: float = 0.0,
    cuts: int = 4,
    clip_image=None,
    clip_image_scale: float = 0.0,
    batch_count: int = 1,
    previews: bool = True,
    request: gr.Request = None,
    progress: gr.Progress = gr.Progress(),
):
    """Stable Diffusion text to image; optional color and CLIP guidance toward a text and/or a reference picture
    (color_scale, clip_scale, clip_image_scale above 0)."""
    job = sd_request("txt2img", locals())
    yield from run_job(sd.generate_sd_steps, sd.validate_sd, job, previews, request, progress, batch_count)


def img2img(
    image,
    prompt: str,
    negative_prompt: str,
    scheduler: str,
    steps: int,
    guidance_scale: float,
    strength: float,
    batch_size: int,
    seed: int,
    model: str | None = None,
    color: str = "#1e90ff",
    color_scale: float = 0.0,
    color_decoder: str = "auto",
    clip_prompt: str = "",
    clip_scale: float = 0.0,
    cuts: int = 4,
    clip_image=None,
    clip_image_scale: float = 0.0,
    batch_count: int = 1,
    previews: bool = True,
    request: gr.Request = None,
    progress: gr.Progress = gr.Progress(),
):
    """Stable Diffusion image to image; optional color and CLIP guidance toward a text and/or a reference picture
    (color_scale, clip_scale, clip_image_scale above 0)."""
    job = sd_request("img2img", locals())
    yield from run_job(sd.generate_sd_steps, sd.validate_sd, job, previews, request, progress, batch_count)


def inpaint(
    image,
    mask,
    prompt: str,
    negative_prompt: str,
    scheduler: str,
    steps: int,
    guidance_scale: float,
    strength: float,
    batch_size: int,
    seed: int,
    mask_blur: int = 4,
    model: str | None = None,
    color: str = "#1e90ff",
    color_scale: float = 0.0,
    color_decoder: str = "auto",
    clip_prompt: str = "",
    clip_scale: float = 0.0,
    cuts: int = 4,
    clip_image=None,
    clip_image_scale: float = 0.0,
    outpaint_left: int = 0,
    outpaint_right: int = 0,
    outpaint_top: int = 0,
    outpaint_bottom: int = 0,
    batch_count: int = 1,
    previews: bool = True,
    request: gr.Request = None,
    progress: gr.Progress = gr.Progress(),
):
    """Stable Diffusion inpainting: white mask pixels are repainted, every other pixel is kept exactly; optional
    color and CLIP guidance (color_scale, clip_scale, clip_image_scale above 0) act on the repainted region only.
    Outpainting: outpaint_left/right/top/bottom (px, multiples of 8, up to 512) grow the canvas on that side; the new
    area is pre-filled from the edge colors plus noise and repainted (the mask is then optional), and every pixel
    of the original comes back unchanged."""
    job = sd_request("inpaint", locals())
    yield from run_job(sd.generate_sd_steps, sd.validate_sd, job, previews, request, progress, batch_count)
