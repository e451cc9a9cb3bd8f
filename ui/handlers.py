"""The six generation endpoints. Thin: each names its keywords (the API's), builds the request, and runs it."""

from __future__ import annotations

import inspect

import gradio as gr

from pipelines import stable_diffusion as sd
from pipelines import unconditional as uncond
from pipelines.batches import MAX_BATCH_COUNT
from pipelines.clip import DEFAULT_CUTS, MAX_CUTS
from pipelines.images import MAX_OUTPAINT
from ui.jobs import HANDLER_ONLY, run_job

COLORS = "#RRGGBB, #RGB, rgb(), hsl() or a CSS name"
# What each API keyword does and its range or choices, for the endpoints' descriptions (view_api, and the tool
# schema an MCP client sees): one line each, as Gradio reads them. Pixel-model endpoints first, then the Stable
# Diffusion ones where a keyword means something else there.
PIXEL_ARGS = {
    "model": "the diffusion model: one of the configured models (UNCOND_MODELS; the bundled emoji model offline)",
    "scheduler": f"the sampler: {', '.join(uncond.SCHEDULERS)}",
    "steps": f"denoising steps, 1 to {uncond.MAX_STEPS}",
    "batch_size": f"images per batch, 1 to {uncond.MAX_BATCH}; image i uses seed + i",
    "seed": "the seed of the first image; -1 draws a random one (the info says which)",
    "eta": "DDIM only: 0 is deterministic, 1 adds fresh noise each step (ancestral)",
    "color": f"the target color of color guidance: {COLORS}",
    "color_scale": f"color guidance strength, 0 (off) to {uncond.MAX_COLOR_SCALE:g}",
    "compare": "also return the unguided image of each seed, after the guided ones",
    "gradient_method": "how guidance reaches the sample: x0 (fast, no UNet backward pass) or unet (exact, slower)",
    "prompt": "the text CLIP guidance pulls toward (empty: only the reference picture guides)",
    "clip_scale": f"CLIP guidance strength toward the prompt, 0 (off) to {uncond.MAX_CLIP_SCALE:g}",
    "cuts": f"random crops of each image CLIP judges per step, 1 to {MAX_CUTS}; more is steadier and slower",
    "clip_image": "a reference picture CLIP guidance pulls toward (its CLIP image embedding), or none",
    "clip_image_scale": f"CLIP guidance strength toward the reference picture, 0 (off) to {uncond.MAX_CLIP_SCALE:g}",
    "batch_count": f"batches run one after another, 1 to {MAX_BATCH_COUNT}, seeds continuing",
    "recurrence": f"times each guided step is taken (re-noised back in between), 1 to {uncond.MAX_RECURRENCE}; above 1 "
    "keeps strongly guided images looking like the model's, costs that many times the guided steps (DDIM, DDPM)",
    "previews": "stream the predicted image while it samples (submit); predict returns only the final images",
}
SD_ARGS = PIXEL_ARGS | {
    "model": "the Stable Diffusion checkpoint: SD_MODEL (and the bundled emoji model when present)",
    "prompt": "what to draw (truncated at the text encoder's 77 tokens, with a warning)",
    "negative_prompt": "what to steer away from (classifier-free guidance's negative branch)",
    "scheduler": f"the sampler: {', '.join(sd.SD_SCHEDULERS)}",
    "steps": f"denoising steps, 1 to {sd.MAX_SD_STEPS} (img2img and inpainting run strength x steps of them)",
    "guidance_scale": f"classifier-free guidance (CFG) scale, 0 to {sd.MAX_GUIDANCE:g}",
    "width": f"image width in px, a multiple of 8 from {sd.MIN_SIZE} to {sd.MAX_SIZE}; 0 or none: native",
    "height": f"image height in px, a multiple of 8 from {sd.MIN_SIZE} to {sd.MAX_SIZE}; 0 or none: native",
    "batch_size": f"images per batch, 1 to {sd.MAX_SD_BATCH}; image i uses seed + i",
    "image": "the input picture (any mode and size; worked on at a multiple of 8, returned at its own size)",
    "mask": "white pixels (or any paint on a transparent layer) are repainted, the rest kept exactly; optional when "
    "outpainting",
    "strength": "how much of the input is re-noised: 0 keeps it, 1 replaces it",
    "mask_blur": f"px of inward feathering where the repainted area meets the original, 0 to {sd.MAX_MASK_BLUR}",
    "color_scale": f"color guidance strength, 0 (off) to {sd.MAX_SD_COLOR_SCALE:g}",
    "color_decoder": "what the color loss sees: auto (the model's choice), cheap (linear latent-to-RGB), vae (exact)",
    "clip_prompt": "the text CLIP guidance pulls toward (CLIP_MODEL; the bundled emoji CLIP for the bundled model)",
    "clip_scale": f"CLIP guidance strength toward clip_prompt, 0 (off) to {sd.MAX_SD_CLIP_SCALE:g}",
    "clip_image_scale": f"CLIP guidance strength toward the reference picture, 0 (off) to {sd.MAX_SD_CLIP_SCALE:g}",
    **{
        f"outpaint_{side}": f"outpainting: px added on the {side}, a multiple of 8 from 0 to {MAX_OUTPAINT}"
        for side in ("left", "right", "top", "bottom")
    },
}


def documented(summary: str, arguments: dict[str, str]):
    """Give a handler its docstring: `summary`, then an Args block of one line per keyword (what it does, its range
    or choices, its default), written once here for the six endpoints instead of six times by hand."""

    def decorate(fn):
        lines = []
        for name, parameter in inspect.signature(fn).parameters.items():
            if name in ("request", "progress"):
                continue
            default = "" if parameter.default is inspect.Parameter.empty else f" (default {parameter.default!r})"
            lines.append(f"    {name}: {arguments[name]}{default}")
        returns = "Returns the images (PNGs carrying their parameters) and an info dict: every parameter, the seeds."
        fn.__doc__ = f"{summary} {returns}\n\nArgs:\n" + "\n".join(lines)
        return fn

    return decorate


def sampling_request(arguments: dict) -> uncond.SamplingRequest:
    """A SamplingRequest from a handler's arguments, which are named like its fields (and the API's keywords)."""
    fields = {key: value for key, value in arguments.items() if key not in HANDLER_ONLY}
    return uncond.SamplingRequest(**fields)


@documented(
    "Sample images from an unconditional diffusion model.",
    PIXEL_ARGS,
)
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
    job = sampling_request(locals())
    yield from run_job(uncond.generate_steps, uncond.validate, job, previews, request, progress, batch_count)


@documented(
    "Sample images pulled toward a color by a loss on the predicted clean image.",
    PIXEL_ARGS,
)
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
    recurrence: int = 1,
    previews: bool = True,
    request: gr.Request = None,
    progress: gr.Progress = gr.Progress(),
):
    job = sampling_request(locals())
    yield from run_job(uncond.generate_steps, uncond.validate, job, previews, request, progress, batch_count)


@documented(
    "Sample images pulled by CLIP toward a text prompt and/or a reference picture (clip_image, "
    "clip_image_scale), optionally toward a color at the same time.",
    PIXEL_ARGS,
)
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
    recurrence: int = uncond.DEFAULT_CLIP_RECURRENCE,
    previews: bool = True,
    request: gr.Request = None,
    progress: gr.Progress = gr.Progress(),
):
    job = sampling_request(locals())
    yield from run_job(uncond.generate_steps, uncond.validate, job, previews, request, progress, batch_count)


def sd_request(task: str, arguments: dict) -> sd.SDRequest:
    """An SDRequest from a handler's arguments, which are named like its fields (and the API's keywords)."""
    fields = {key: value for key, value in arguments.items() if key not in HANDLER_ONLY}
    return sd.SDRequest(task=task, **fields)


@documented(
    "Stable Diffusion text to image; optional color and CLIP guidance toward a text and/or a reference "
    "picture (color_scale, clip_scale, clip_image_scale above 0).",
    SD_ARGS,
)
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
    cuts: int = DEFAULT_CUTS,
    clip_image=None,
    clip_image_scale: float = 0.0,
    batch_count: int = 1,
    previews: bool = True,
    request: gr.Request = None,
    progress: gr.Progress = gr.Progress(),
):
    job = sd_request("txt2img", locals())
    yield from run_job(sd.generate_sd_steps, sd.validate_sd, job, previews, request, progress, batch_count)


@documented(
    "Stable Diffusion image to image; optional color and CLIP guidance toward a text and/or a reference "
    "picture (color_scale, clip_scale, clip_image_scale above 0).",
    SD_ARGS,
)
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
    cuts: int = DEFAULT_CUTS,
    clip_image=None,
    clip_image_scale: float = 0.0,
    batch_count: int = 1,
    previews: bool = True,
    request: gr.Request = None,
    progress: gr.Progress = gr.Progress(),
):
    job = sd_request("img2img", locals())
    yield from run_job(sd.generate_sd_steps, sd.validate_sd, job, previews, request, progress, batch_count)


@documented(
    "Stable Diffusion inpainting: white mask pixels are repainted, every other pixel is kept exactly; "
    "optional color and CLIP guidance (color_scale, clip_scale, clip_image_scale above 0) act on the "
    "repainted region only. Outpainting: outpaint_left/right/top/bottom (px, multiples of 8, up to 512) grow "
    "the canvas on that side; the new area is pre-filled from the edge colors plus noise and repainted (the "
    "mask is then optional), and every pixel of the original comes back unchanged.",
    SD_ARGS,
)
def inpaint(
    image,
    mask=None,  # a default of None is what makes Gradio (and its MCP tool schema) call it optional, for outpainting
    prompt: str = "",
    negative_prompt: str = "",
    scheduler: str = sd.DEFAULT_SD_SCHEDULER,
    steps: int = sd.DEFAULT_SD_STEPS,
    guidance_scale: float = sd.DEFAULT_GUIDANCE,
    strength: float = 1.0,
    batch_size: int = 1,
    seed: int = -1,
    mask_blur: int = 4,
    model: str | None = None,
    color: str = "#1e90ff",
    color_scale: float = 0.0,
    color_decoder: str = "auto",
    clip_prompt: str = "",
    clip_scale: float = 0.0,
    cuts: int = DEFAULT_CUTS,
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
    job = sd_request("inpaint", locals())
    yield from run_job(sd.generate_sd_steps, sd.validate_sd, job, previews, request, progress, batch_count)


# Each tab's endpoint (pipelines.tabs lists the tabs).
HANDLERS = {
    "unconditional": unconditional,
    "color_guided": color_guided,
    "clip_guided": clip_guided,
    "txt2img": txt2img,
    "img2img": img2img,
    "inpaint": inpaint,
}
