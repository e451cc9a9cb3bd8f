"""Stable Diffusion txt2img, img2img and inpainting on one cached copy of the weights."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    LCMScheduler,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLInpaintPipeline,
    StableDiffusionXLPipeline,
    UniPCMultistepScheduler,
)
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_img2img import retrieve_latents
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image, ImageChops

from guidance import SamplingInterrupted, StopRequested, guided_sample, stop_checks
from guidance.latent_rgb import LatentRGB, latent_rgb_for
from guidance.models import ClassifierFreeGuidance
from guidance.sampler import schedule, strength_steps
from pipelines.budget import SD_CLIP_STEP_FRACTION, SD_DECODER_PASS_STEPS, sd_seconds
from pipelines.bundled import BUNDLED_LABEL, bundled_path, prefer_bundled, recorded_name
from pipelines.cache import MODELS, reporting_unreachable_hub
from pipelines.clip import get_clip
from pipelines.config import setting
from pipelines.device import default_device, model_dtype
from pipelines.families import Family, detect_family, uses_cfg
from pipelines.gpu import gpu
from pipelines.images import (
    border_mask,
    eroded_mask,
    feathered_mask,
    outpaint_canvas,
    paste_outside_mask,
    prepare_image,
    prepare_mask,
    working_size,
)
from pipelines.jobs import JobFailed, Preview, StepDone, StopToken, stream_job
from pipelines.limits import Work, check_work, server_limits
from pipelines.loras import applied, hashes_line, requested_loras, without_lora_tags
from pipelines.outputs import GenerationResult, package
from pipelines.params import OUTPAINT, SD, request_fields
from pipelines.previews import PreviewCallback, latent_previews, previewing
from pipelines.prompts import compel_syntax, how_read, reads_with_compel
from pipelines.seeds import seeded_generators
from pipelines.tabs import SD_TABS
from pipelines.terms import View, clip_guided, effective_particles, guidance_terms, is_guided, particle_run
from pipelines.validation import (
    checked,
    checked_values,
    choice,
    clip_text_scale,
    color_target,
    image_fingerprint,
    in_page,
    reference_image,
    resolve_seed,
    shown,
)

DEFAULT_SD_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
# The checkpoints offered when SD_MODELS (and the older SD_MODEL) set none, the default first: SD 1.5, SDXL base and
# a few-step model (SDXL-Turbo: 1-4 steps, CFG off).
DEFAULT_SD_MODELS = (DEFAULT_SD_MODEL, "stabilityai/stable-diffusion-xl-base-1.0", "stabilityai/sdxl-turbo")
DEFAULT_SD_INPAINT_MODEL = "stable-diffusion-v1-5/stable-diffusion-inpainting"
SD_SCHEDULERS: dict[str, Callable] = {
    "DPM++ 2M Karras": lambda config: DPMSolverMultistepScheduler.from_config(
        config, algorithm_type="dpmsolver++", solver_order=2, use_karras_sigmas=True
    ),
    "DPM++ 2M": lambda config: DPMSolverMultistepScheduler.from_config(
        config, algorithm_type="dpmsolver++", solver_order=2
    ),
    "Euler a": lambda config: EulerAncestralDiscreteScheduler.from_config(config),
    "Euler": lambda config: EulerDiscreteScheduler.from_config(config),
    # Timesteps from the last one down, evenly: what few-step LoRAs (SDXL-Lightning, Hyper-SD) and turbo models want
    # on a checkpoint whose own schedule is "leading" (webui's "SGM Uniform", diffusers' "trailing" spacing).
    "Euler SGM Uniform": lambda config: EulerDiscreteScheduler.from_config(config, timestep_spacing="trailing"),
    "DDIM": lambda config: DDIMScheduler.from_config(config),
    "UniPC": lambda config: UniPCMultistepScheduler.from_config(config),
    "LCM": lambda config: LCMScheduler.from_config(config),  # latent consistency models and LCM-LoRAs, 2-8 steps
}
# The diffusers pipelines of each family kind (pipelines.families), by task.
PIPELINE_CLASSES = {
    "SD": {
        "txt2img": StableDiffusionPipeline,
        "img2img": StableDiffusionImg2ImgPipeline,
        "inpaint": StableDiffusionInpaintPipeline,
    },
    "SDXL": {
        "txt2img": StableDiffusionXLPipeline,
        "img2img": StableDiffusionXLImg2ImgPipeline,
        "inpaint": StableDiffusionXLInpaintPipeline,
    },
}
XL_PIPELINES = tuple(PIPELINE_CLASSES["SDXL"].values())
MAX_SD_STEPS, MAX_SD_BATCH, MAX_GUIDANCE = SD["steps"].high, SD["batch_size"].high, SD["guidance_scale"].high
MAX_SD_COLOR_SCALE, MAX_SD_CLIP_SCALE = SD["color_scale"].high, SD["clip_scale"].high
DEFAULT_SD_COLOR_SCALE, DEFAULT_SD_CLIP_SCALE = SD["color_scale"].clear, SD["clip_scale"].clear
MIN_SIZE, MAX_SIZE = SD["width"].low, SD["width"].high
# CLIP guidance acts on the last half of the steps, where the "signal" weighting puts most of its movement; color
# guidance through the VAE decoder on the last 8% (the cheap map: every step). Measured in docs/stable-diffusion.md.
SD_CLIP_GUIDED_FRACTION = 0.5
SD_COLOR_VAE_FRACTION = 0.08


def configured_sd_models() -> list[str]:
    """`SD_MODELS` (comma-separated hub ids or local folders, the default first), else `SD_MODEL` alone (the older
    single setting), else DEFAULT_SD_MODELS; never a model a request names (the server decides what loads)."""
    listed = [entry.strip() for entry in os.environ.get("SD_MODELS", "").split(",") if entry.strip()]
    single = os.environ.get("SD_MODEL", "").strip()
    return listed or ([single] if single else list(DEFAULT_SD_MODELS))


def sd_model() -> str:
    """The first configured checkpoint: the default, and the one `SD_INPAINT_MODEL` inpaints for."""
    return configured_sd_models()[0]


def sd_inpaint_model() -> str:
    """`SD_INPAINT_MODEL`: the inpainting checkpoint of the default model (the first configured one, where its family
    is the same); equal to that model means inpaint with its base weights."""
    return os.environ.get("SD_INPAINT_MODEL", "").strip() or DEFAULT_SD_INPAINT_MODEL


def sd_models() -> list[str]:
    """The Stable Diffusion model choices, the default first: the configured ones (`configured_sd_models`), and the
    bundled emoji preset when its weights are present (the default when the Hub is unreachable and neither
    `SD_MODELS` nor `SD_MODEL` is set: a configured model is the default, online or offline)."""
    models = configured_sd_models()
    if bundled_path("sd") is None:
        return models
    configured = any(os.environ.get(name, "").strip() for name in ("SD_MODELS", "SD_MODEL"))
    return [BUNDLED_LABEL, *models] if prefer_bundled("sd") and not configured else [*models, BUNDLED_LABEL]


def model_locations(model: str | None) -> tuple[str, str]:
    """(base checkpoint, inpainting checkpoint) for a model choice; None means the default choice."""
    model = model or sd_models()[0]
    choice("model", model, sd_models())
    if model == BUNDLED_LABEL:
        return bundled_path("sd"), bundled_path("sd")
    return model, sd_inpaint_model() if model == sd_model() else model


def safety_checker_enabled() -> bool:
    """False when `SD_DISABLE_SAFETY_CHECKER` is 1/true/yes: the checker is then not even loaded."""
    return os.environ.get("SD_DISABLE_SAFETY_CHECKER", "").strip().lower() not in ("1", "true", "yes")


@dataclass
class Request(request_fields("SDKeywords", SD, first=(("task", str),))):
    """One Stable Diffusion generation: its tab (`task`: txt2img, img2img or inpaint), a field for every keyword of
    the Stable Diffusion tabs but batch_count and previews (pipelines.params.SD: defaults and meanings; a model of
    None is the first choice, a width or height of None the model's native size), then what validation sets."""

    color_rgb: tuple[float, float, float] | None = field(default=None, repr=False)
    loras: list = field(default_factory=list, repr=False)  # set by validation: the prompt's <lora:...> tags
    outpainted: bool = field(default=False, repr=False)  # set by validation: image and mask are already the canvas
    warnings: list[str] = field(default_factory=list, repr=False)  # set by validate: what changes what you get

    def work(self) -> Work:
        """The compute this (checked) request asks for, in the limits' units."""
        return sd_work(self)

    @property
    def outpaint(self) -> tuple[int, int, int, int]:
        """The (left, right, top, bottom) margins outpainting adds."""
        return self.outpaint_left, self.outpaint_right, self.outpaint_top, self.outpaint_bottom


def _size(name: str, value) -> int:
    """A width or height: a multiple of 8 within its range."""
    size = checked(name, value, SD[name]) if value is not None else None
    if size is None or size % 8:
        raise ValueError(
            f"{name} must be a multiple of 8 from {MIN_SIZE} to {MAX_SIZE}, got {shown(value)}{in_page(name)}"
        )
    return size


def validate(request: Request) -> Request:
    """A checked copy with the seed resolved and images prepared; ValueError names the bad field and value."""
    choice("task", request.task, SD_TABS)
    model = request.model or sd_models()[0]
    checked("model", model, SD["model"])
    values = checked_values(request, SD, own=("task", "model", "seed", "width", "height", *OUTPAINT))
    checked_request = Request(
        task=request.task, model=model, **values, seed=resolve_seed(request.seed, values["batch_size"])
    )
    checked_request.clip_image = reference_image(request.clip_image, checked_request.clip_image_scale)
    checked_request.clip_scale = clip_text_scale(
        "clip_prompt", checked_request.clip_prompt, checked_request.clip_scale, checked_request.clip_image
    )
    checked_request.color_rgb = color_target(checked_request.color, checked_request.color_scale)
    if request.task == "txt2img":
        native = native_size(model) if not (request.width and request.height) else None  # 0/None = native
        native = slider_size(native) if native else None
        checked_request.width = _size("width", request.width or native)
        checked_request.height = _size("height", request.height or native)
    else:
        checked_request.image = prepare_image(request.image)
        checked_request.width, checked_request.height = working_size(*checked_request.image.size)
    if request.task == "inpaint":
        _outpaint_or_mask(request, checked_request)
        blur = checked_request.mask_blur
        if blur and eroded_mask(checked_request.mask, blur).getbbox() is None:
            raise ValueError(
                f"mask_blur {blur} erases this whole mask (it feathers inward by that many pixels): "
                "lower mask_blur or paint a larger mask"
            )
    checked_request.loras = requested_loras(checked_request.prompt)
    checked_request.particles, checked_request.warnings = effective_particles(checked_request)
    check_work(checked_request.work(), server_limits())
    return checked_request


def _outpaint_margins(request: Request) -> tuple[int, int, int, int]:
    """The checked outpainting margins: multiples of 8 within their range."""
    margins = []
    for name in OUTPAINT:
        value = checked(name, getattr(request, name), SD[name])
        if value % 8:
            raise ValueError(f"{name} must be a multiple of 8 from 0 to {SD[name].high:g}, got {shown(value)}")
        margins.append(value)
    return tuple(margins)


def _outpaint_or_mask(request: Request, checked: Request) -> None:
    """Set the checked inpainting image and mask: with outpainting margins, the image grown onto a pre-filled canvas
    and the mask covering the new margins (plus any painted part of the original, then optional)."""
    margins = _outpaint_margins(request)
    if not any(margins) or request.outpainted:  # a checked request validated again: its canvas is ready
        checked.mask = prepare_mask(request.mask, checked.image.size)
        checked.outpaint_left, checked.outpaint_right, checked.outpaint_top, checked.outpaint_bottom = margins
        checked.outpainted = request.outpainted
        return
    original = checked.image
    checked.outpaint_left, checked.outpaint_right, checked.outpaint_top, checked.outpaint_bottom = margins
    checked.image = outpaint_canvas(original, margins, checked.seed)
    checked.width, checked.height = working_size(*checked.image.size)
    checked.mask = border_mask(checked.image.size, margins)
    checked.outpainted = True
    try:
        painted = prepare_mask(request.mask, original.size)
    except ValueError:  # no mask or nothing painted: the margins alone are repainted
        painted = None
    if painted is not None:
        checked.mask.paste(painted, (margins[0], margins[2]))


def known_family(model: str | None) -> Family | None:
    """The model's family for the compute estimate (read once per checkpoint); None when its configs cannot be read
    here (not remembered: the load that follows says why, and the next request reads them again)."""
    try:
        return model_family(model)
    except Exception:  # noqa: BLE001 - an unreachable or broken model is reported by its load, once
        return None


def sd_work(request: Request) -> Work:
    """The compute a checked request asks for: img2img and inpainting run only strength x steps of the schedule and
    encode their input; a step without classifier-free guidance (CFG off, an LCM UNet) is one UNet half; guidance
    through the VAE decoder (color with the "vae" decoder, CLIP) adds decoder passes; a size above the model's
    native one costs more per pixel; the hires fix counts its second pass at the larger size."""
    family = known_family(request.model)
    steps = denoising_steps(request)
    passes = 1.0 if uses_cfg(request.guidance_scale, family is not None and family.few_step == "LCM") else 0.5
    if request.color_scale > 0 and request.color_decoder == "vae":
        passes += SD_DECODER_PASS_STEPS
    if clip_guided(request):
        passes += SD_CLIP_STEP_FRACTION * SD_DECODER_PASS_STEPS
    native = family.native_size if family is not None else 0
    width, height = request.width, request.height
    if request.task == "txt2img" and request.hires_scale > 1:  # checked at the output size: the first pass counts
        width, height = hires_size(request)  # as its share of steps there
        steps = hires_denoising_steps(request) + math.ceil(steps * request.width * request.height / (width * height))
    return Work(
        steps,
        request.batch_size,
        width,
        height,
        cuts=request.cuts if clip_guided(request) else 0,
        passes=passes,
        native_pixels=native * native,
        coder_passes=1.0 if request.task == "txt2img" else 2.0,
        particles=request.particles if is_guided(request) else 1,
        size_name="the hires fix's output" if (width, height) != (request.width, request.height) else "width x height",
    )


def _load(pipeline_class, ref: str, device: torch.device):
    """Load a Stable Diffusion checkpoint on `device` (fp16 on CUDA), safety checker as configured (SD 1.x/2.x:
    SDXL ships none), no invisible watermark (SDXL's pipelines add one when the package is installed)."""
    kwargs = {"torch_dtype": model_dtype(device)}
    xl = issubclass(pipeline_class, XL_PIPELINES)
    if xl:
        kwargs["add_watermarker"] = False
    elif not safety_checker_enabled():
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    pipeline = None
    if device.type == "cuda":
        try:  # the fp16 files are half the download
            pipeline = pipeline_class.from_pretrained(ref, variant="fp16", **kwargs)
        except (OSError, ValueError):
            pipeline = None
    if pipeline is None:
        pipeline = pipeline_class.from_pretrained(ref, **kwargs)
    pipeline = pipeline.to(device)
    vae = pipeline.vae
    if xl and getattr(vae.config, "force_upcast", False) and vae.dtype != torch.float32:  # overflows in fp16
        pipeline.vae.to(torch.float32)
    if device.type == "cuda":
        pipeline.unet.to(memory_format=torch.channels_last)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def model_family(model: str | None = None) -> Family:
    """A model choice's family (pipelines.families): that of its base checkpoint."""
    return checkpoint_family(model_locations(model)[0])


def checkpoint_family(ref: str, kind: str = "sd", local_files_only: bool = False) -> Family:
    """A checkpoint's family, read once from its configs (no weights; with `local_files_only`, only from the local
    cache); `kind` ("sd", "sd-inpaint") names the setting to change where the Hub is unreachable."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    if ref not in _FAMILIES:
        with reporting_unreachable_hub(kind, ref):
            configs = [
                component.load_config(ref, subfolder=folder, local_files_only=local_files_only)
                for component, folder in (
                    (UNet2DConditionModel, "unet"),
                    (DDIMScheduler, "scheduler"),
                    (AutoencoderKL, "vae"),
                )
            ]
        _FAMILIES[ref] = detect_family(*configs)
    return _FAMILIES[ref]


_FAMILIES: dict[str, Family] = {}


def remember_family(ref: str, pipeline) -> Family:
    """Record the family of a checkpoint given as loaded components (a bench's or a test's pipeline placed in the
    model cache under `ref`), read from their configs as a folder's would be."""
    configs = (dict(pipeline.unet.config), dict(pipeline.scheduler.config), dict(pipeline.vae.config))
    _FAMILIES[ref] = detect_family(*configs)
    return _FAMILIES[ref]


def family_defaults(tab: str, model: str) -> tuple[dict[str, object], str | None]:
    """The scheduler, steps and CFG scale a tab starts `model` at, and a sentence saying why where a few-step model
    changes them: its family's recommendation (pipelines.families.FEW_STEP), else the tab's own defaults with the
    family's CFG scale (SDXL's pipelines use 5, SD's 7.5)."""
    from pipelines.params import param

    family = model_family(model)
    values = {name: param(tab, name).default for name in ("scheduler", "steps")} | family.defaults()
    if family.few_step is None:
        return values, None
    shown = f"{values['scheduler']}, {values['steps']} step{'s' if values['steps'] != 1 else ''}"
    return values, (
        f"{family.name} few-step model ({family.few_step}): the tab now starts it at {shown}, "
        f"CFG scale {values['guidance_scale']:g}"
    )


def sd_models_kept() -> int:
    """`STUDIO_SD_MODELS_KEPT`: how many Stable Diffusion checkpoints stay loaded (with their inpainting partners);
    picking another frees the least recently used."""
    return setting("STUDIO_SD_MODELS_KEPT", 1, 1)


def _weights_owner(base_ref: str) -> tuple[str, str, int]:
    """The model cache's owner of a checkpoint's weights: the base checkpoint, in the group of SD checkpoints."""
    return ("sd-weights", base_ref, sd_models_kept())


def get_base_pipeline(model: str | None = None):
    """The txt2img pipeline of a model choice (its family's), loaded once; img2img (and inpainting on the base)
    reuse its parts."""
    ref, device = model_locations(model)[0], default_device()
    pipeline_class = PIPELINE_CLASSES[model_family(model).kind]["txt2img"]
    return MODELS.get(("sd", ref, str(device)), lambda: _load(pipeline_class, ref, device), _weights_owner(ref))


def get_components(task: str, model: str | None = None) -> tuple[dict, str]:
    """The components for `task` and the checkpoint they come from; a dedicated inpainting model loads on first use."""
    base_ref, inpaint_ref = model_locations(model)
    # The dedicated inpainting checkpoint serves the default model where it is of the same family (SD 1.5's
    # inpainting model for SD 1.5); any other model inpaints with its own weights.
    base = checkpoint_family(base_ref)
    if task == "inpaint" and inpaint_ref != base_ref and checkpoint_family(inpaint_ref, "sd-inpaint").name == base.name:
        device, inpainting = default_device(), PIPELINE_CLASSES[base.kind]["inpaint"]
        pipeline = MODELS.get(
            ("sd-inpaint", inpaint_ref, str(device)),
            lambda: _load(inpainting, inpaint_ref, device),
            _weights_owner(base_ref),  # kept and freed with its base model
        )
        return dict(pipeline.components), inpaint_ref
    return dict(get_base_pipeline(model).components), base_ref


def build_pipeline(task: str, scheduler_name: str, model: str | None = None):
    """A pipeline object for one request: shared weights, its own fresh scheduler (never shared between requests)."""
    components, ref = get_components(task, model)
    components["scheduler"] = SD_SCHEDULERS[scheduler_name](components["scheduler"].config)
    kind = model_family(model).kind
    if kind == "SDXL":  # the checkpoint's own choice for an empty negative prompt, no watermark
        components["add_watermarker"] = False
        components["force_zeros_for_empty_prompt"] = get_base_pipeline(model).config.get(
            "force_zeros_for_empty_prompt", True
        )
    elif components.get("safety_checker") is None:
        components["requires_safety_checker"] = False
    pipeline = PIPELINE_CLASSES[kind][task](**components)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline, ref


def native_size(model: str | None = None, local_files_only: bool = False) -> int:
    """A model's native image side (512 for SD 1.5): its family's, from its configs (no weights)."""
    return checkpoint_family(model_locations(model)[0], local_files_only=local_files_only).native_size


def slider_size(size: int) -> int:
    """A native size as a valid width/height value: a multiple of 8 within [MIN_SIZE, MAX_SIZE] (a 32 px model's
    sliders start at 64, not at a value the slider would refuse)."""
    return int(min(MAX_SIZE, max(MIN_SIZE, size // 8 * 8)))


def default_size(model: str | None = None) -> int:
    """The native size if its config is already on disk (never downloads: used while building the UI), else 512."""
    try:
        return native_size(model, local_files_only=True)
    except Exception:  # not cached yet, or no network: SD 1.5's size
        return 512


SIZE_PRESETS = {"square": (1, 1), "portrait": (2, 3), "landscape": (3, 2)}


def preset_size(native: int, preset: str) -> tuple[int, int]:
    """(width, height) of a size preset at a model's native size: the short side native, the long side 1.5x for
    portrait and landscape (2:3, 3:2), each a multiple of 8 within the sliders' range."""
    across, down = SIZE_PRESETS[choice("preset", preset, SIZE_PRESETS)]
    short = slider_size(native)
    return slider_size(short * across // min(across, down)), slider_size(short * down // min(across, down))


def denoising_steps(request: Request) -> int:
    """How many steps actually run: img2img and inpaint run only the last `strength_steps` of them."""
    return request.steps if request.task == "txt2img" else strength_steps(request.steps, request.strength)


def _info(request: Request, ref: str, warnings: list[str]) -> dict:
    """The parameters recorded in the info panel and every PNG."""
    info = {
        "task": request.task,
        "model": BUNDLED_LABEL if request.model == BUNDLED_LABEL else ref,  # a label, not the server's folder
        "prompt": request.prompt,
        "negative_prompt": request.negative_prompt,
        "scheduler": request.scheduler,
        "steps": request.steps,
        "guidance_scale": request.guidance_scale,
        "width": request.width,
        "height": request.height,
        "batch_size": request.batch_size,
        "seed": request.seed,
        "seeds": [request.seed + index for index in range(request.batch_size)],
    }
    if request.task != "txt2img":
        info.update(
            strength=request.strength,
            denoising_steps=denoising_steps(request),
            input_size=list(request.image.size),
            working_size=[request.width, request.height],
        )
        info.pop("width"), info.pop("height")
    if request.task == "txt2img" and request.hires_scale > 1:
        info.update(
            hires_scale=request.hires_scale,
            hires_upscaler=request.hires_upscaler,
            hires_steps=request.hires_steps,
            strength=request.strength,
            hires_denoising_steps=hires_denoising_steps(request),
            output_size=list(hires_size(request)),
        )
    if request.task == "inpaint":
        info["mask_blur"] = request.mask_blur
        if any(request.outpaint):
            left, right, top, bottom = request.outpaint
            info.update(outpaint_left=left, outpaint_right=right, outpaint_top=top, outpaint_bottom=bottom)
            info["input_size"] = [request.image.width - left - right, request.image.height - top - bottom]
    if request.color_scale > 0:
        info.update(color=request.color, color_scale=request.color_scale)
    if request.particles > 1:
        info["particles"] = request.particles
    if request.loras:
        info["loras"] = [{"name": lora.name, "weight": lora.weight} for lora in request.loras]
        info["lora_hashes"] = hashes_line(request.loras)
    info["warnings"] = warnings
    return info


def _call_arguments(request: Request) -> dict:
    """Task-specific pipeline arguments, with the input resized to the working size."""
    if request.task == "txt2img":
        return {"width": request.width, "height": request.height}
    size = (request.width, request.height)
    arguments = {"image": request.image.resize(size, Image.Resampling.LANCZOS), "strength": request.strength}
    if request.task == "inpaint":
        arguments.update(mask_image=request.mask.resize(size, Image.Resampling.NEAREST), width=size[0], height=size[1])
    return arguments


def _finisher(request: Request) -> Callable[[Image.Image], Image.Image]:
    """What brings each generated image back to the size the user gave, with the input's exact pixels outside the
    mask (the feathered mask is computed once per request, not once per image)."""
    if request.task == "txt2img":
        return lambda image: image
    if request.task == "img2img":
        return lambda image: image.resize(request.image.size, Image.Resampling.LANCZOS)
    alpha = feathered_mask(request.mask, request.mask_blur)
    if any(request.outpaint):  # the new margins are wholly generated: no blend with their noisy pre-fill
        alpha = ImageChops.lighter(alpha, border_mask(request.image.size, request.outpaint))
    return lambda image: paste_outside_mask(request.image, image, alpha)


@dataclass
class LatentRun:
    """What the guided loop needs for one Stable Diffusion request, prepared as diffusers' pipelines prepare it."""

    model: ClassifierFreeGuidance  # the UNet with CFG (and a 9-channel inpainting UNet's extra channels)
    noise: torch.Tensor
    begin_index: int | None = None  # img2img and inpaint start later in the schedule
    clean: torch.Tensor | None = None  # ... from these latents noised to their first timestep
    after_step: Callable[[int, torch.Tensor], torch.Tensor] | None = None  # a plain UNet's inpainting blend
    region: torch.Tensor | None = None  # inpainting: the repainted area at latent size (B, 1, h, w), 1 inside


def _compel_conditioning(pipeline, request: Request, cfg: bool) -> tuple:
    """(Prompt embeddings, negative ones with CFG, pooled, negative pooled; the pooled ones SDXL's only) of a weighted
    or long prompt, embedded by compel (pipelines.prompts), repeated for the batch; an empty negative prompt is
    zeros where the SDXL model says so (`force_zeros_for_empty_prompt`), as diffusers does."""
    from compel import CompelForSD, CompelForSDXL

    xl = isinstance(pipeline, XL_PIPELINES)
    negative = compel_syntax(request.negative_prompt)
    with torch.no_grad():
        read = (CompelForSDXL if xl else CompelForSD)(pipeline)(compel_syntax(request.prompt), negative_prompt=negative)
    zeros = xl and not request.negative_prompt and pipeline.config.get("force_zeros_for_empty_prompt", False)
    dtype, batch = pipeline.unet.dtype, request.batch_size

    def rows(tensor: torch.Tensor | None, zero: bool = False) -> torch.Tensor | None:
        if tensor is None:
            return None
        tensor = torch.zeros_like(tensor) if zero else tensor
        return tensor.to(device=pipeline._execution_device, dtype=dtype).repeat(batch, *[1] * (tensor.dim() - 1))

    uncond = rows(read.negative_embeds, zeros) if cfg else None
    uncond_pooled = rows(read.negative_pooled_embeds, zeros) if cfg else None
    return rows(read.embeds), uncond, rows(read.pooled_embeds), uncond_pooled


def _conditioning(pipeline, request: Request, cfg: bool) -> tuple[torch.Tensor, torch.Tensor | None, dict | None]:
    """(Prompt embeddings, negative ones with CFG, the UNet's added conditioning) as the family's pipeline makes
    them: SD 1.x/2.x one encoder; SDXL two, the pooled embedding of the second and the size ids (original size =
    target size = the image's, no crop), negatives first as in diffusers' CFG batch."""
    request = replace(  # what the text encoders read: <lora:...> tags out
        request, prompt=without_lora_tags(request.prompt), negative_prompt=without_lora_tags(request.negative_prompt)
    )
    device, batch, negative = pipeline._execution_device, request.batch_size, request.negative_prompt or None
    xl = isinstance(pipeline, XL_PIPELINES)
    if reads_with_compel(pipeline.tokenizer, request.prompt, request.negative_prompt if cfg else ""):
        text, uncond, pooled, uncond_pooled = _compel_conditioning(pipeline, request, cfg)
    elif not xl:
        return (*pipeline.encode_prompt(request.prompt, device, batch, cfg, negative), None)
    else:
        text, uncond, pooled, uncond_pooled = pipeline.encode_prompt(
            request.prompt,
            device=device,
            num_images_per_prompt=batch,
            do_classifier_free_guidance=cfg,
            negative_prompt=negative,
        )
    if not xl:
        return text, uncond, None
    # (original size, crop top-left, target size): what all three SDXL pipelines pass by default (no aesthetic score:
    # a refiner, which wants one, is not a base model the tabs run).
    size = (request.height, request.width)
    ids = torch.tensor([[*size, 0, 0, *size]], dtype=text.dtype, device=device)
    if cfg:
        pooled, ids = torch.cat([uncond_pooled, pooled]), torch.cat([ids, ids])
    return text, uncond if cfg else None, {"text_embeds": pooled, "time_ids": ids.repeat(batch, 1)}


def _conditioned(pipeline, request: Request) -> tuple[Callable[..., ClassifierFreeGuidance], torch.dtype, bool]:
    """(A maker of the conditioned denoiser, given a 9-channel UNet's extra channels or none; the embeddings' dtype;
    whether CFG runs) for a request, its prompts encoded as its model's pipeline encodes them."""
    unet, device = pipeline.unet, pipeline._execution_device
    cfg = uses_cfg(request.guidance_scale, unet.config.time_cond_proj_dim is not None)
    text, uncond, added = _conditioning(pipeline, request, cfg)
    timestep_cond = None
    if unet.config.time_cond_proj_dim is not None:  # an LCM UNet reads the CFG scale as an embedding
        scale = torch.tensor(request.guidance_scale - 1).repeat(request.batch_size)
        embedding = pipeline.get_guidance_scale_embedding(scale, embedding_dim=unet.config.time_cond_proj_dim)
        timestep_cond = embedding.to(device=device, dtype=text.dtype)

    def denoiser(extra_channels: torch.Tensor | None = None) -> ClassifierFreeGuidance:
        return ClassifierFreeGuidance(
            unet, text, uncond, request.guidance_scale, extra_channels, added_cond=added, timestep_cond=timestep_cond
        )

    return denoiser, text.dtype, cfg


def hires_size(request: Request) -> tuple[int, int]:
    """The hires fix's output (width, height): the request's size times `hires_scale`, down to multiples of 8."""
    return tuple(int(side * request.hires_scale) // 8 * 8 for side in (request.width, request.height))


def hires_denoising_steps(request: Request) -> int:
    """The steps the hires fix's second pass runs: strength x its steps (0: no hires fix, or nothing to repaint)."""
    if request.task != "txt2img" or request.hires_scale <= 1:
        return 0
    return strength_steps(request.hires_steps or request.steps, request.strength)


@torch.no_grad()
def _enlarged(pipeline, request: Request, latents: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
    """The first pass's clean latents enlarged to the hires size: bilinear on the latents ("Latent"), or decoded,
    resized with Lanczos and encoded again, each image sampled from its own generator ("Lanczos")."""
    width, height = hires_size(request)
    factor, vae = pipeline.vae_scale_factor, pipeline.vae
    if request.hires_upscaler == "Latent":
        size = (height // factor, width // factor)
        return torch.nn.functional.interpolate(latents, size=size, mode="bilinear", align_corners=False)
    decoded = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor, return_dict=False)[0]
    pictures = pipeline.image_processor.postprocess(decoded, output_type="pil")
    larger = [picture.resize((width, height), Image.Resampling.LANCZOS) for picture in pictures]
    pixels = pipeline.image_processor.preprocess(larger).to(device=latents.device, dtype=vae.dtype)
    encoded = [retrieve_latents(vae.encode(pixels[i : i + 1]), generator=g) for i, g in enumerate(generators)]
    return (vae.config.scaling_factor * torch.cat(encoded)).to(latents.dtype)


def _hires_pass(
    pipeline, request: Request, latents: torch.Tensor, rows: list, terms: list, callback: Callable, done: int
) -> torch.Tensor:
    """The hires fix's second pass (stable-diffusion-webui's Hires. fix): the first pass's latents (one row per
    image) enlarged, then repainted at the hires size as img2img repaints, `strength` x `hires_steps` (or the first
    pass's steps) steps, with the same guidance and a fresh scheduler; noise from each image's generators, which
    the first pass left where it ended. Steps are reported after the first pass's `done`."""
    count, steps = request.particles, request.hires_steps or request.steps
    width, height = hires_size(request)
    clean = _enlarged(pipeline, request, latents, rows[::count]).repeat_interleave(count, 0)
    larger = replace(request, width=width, height=height, batch_size=request.batch_size * count)
    denoiser, dtype, _ = _conditioned(pipeline, larger)  # SDXL's size ids follow the new size
    noise = randn_tensor(clean.shape, generator=rows, device=clean.device, dtype=dtype)

    def reported(step: int, total: int, x0: torch.Tensor) -> None:
        try:
            callback(done + step, done + total, x0)
        except SamplingInterrupted as stop:
            stop.counted = True  # its step already counts the first pass
            raise

    try:
        return guided_sample(
            denoiser(),
            SD_SCHEDULERS[request.scheduler](pipeline.scheduler.config),
            noise,
            steps,
            terms,
            generator=rows,
            callback=reported,
            begin_index=steps - hires_denoising_steps(request),
            clean=clean.to(dtype),
            weighting="signal",
            particles=particle_run(request.seed, request.batch_size, count),
        )
    except SamplingInterrupted as stop:  # stopped inside a step: the loop counted this pass's steps only
        if not getattr(stop, "counted", False):
            if stop.step == 0:  # no step of this pass completed: the enlarged first-pass image, not its noise
                stop.predicted_x0 = clean[::count]
            stop.step += done
        raise


def _prepare(pipeline, request: Request, generators: list[torch.Generator]) -> LatentRun:
    """Prompt embeddings, starting noise and (img2img, inpaint) input latents and mask, with the same calls on the
    same generators in the same order as StableDiffusion(Img2Img|Inpaint)Pipeline.__call__, so that the loop
    reproduces their images exactly."""
    unet, vae, scheduler = pipeline.unet, pipeline.vae, pipeline.scheduler
    device, batch, factor = pipeline._execution_device, request.batch_size, pipeline.vae_scale_factor
    denoiser, dtype, cfg = _conditioned(pipeline, request)
    latent_shape = (batch, vae.config.latent_channels, request.height // factor, request.width // factor)
    if request.task == "txt2img":
        noise = randn_tensor(latent_shape, generator=generators, device=device, dtype=dtype)
        return LatentRun(denoiser(), noise)
    begin_index = request.steps - denoising_steps(request)
    timesteps = schedule(scheduler, request.steps, device, begin_index)
    first = timesteps[:1].repeat(batch)
    arguments = _call_arguments(request)
    if request.task == "img2img":
        image = pipeline.image_processor.preprocess(arguments["image"]).to(device=device, dtype=vae.dtype)
        clean = vae.config.scaling_factor * torch.cat(
            [retrieve_latents(vae.encode(image), generator=generator) for generator in generators]
        ).to(dtype)  # an SDXL VAE kept in fp32 (pipelines.families) encodes in fp32, as diffusers upcasts it
        noise = randn_tensor(clean.shape, generator=generators, device=device, dtype=dtype)
        return LatentRun(denoiser(), noise, begin_index, clean)
    size = dict(height=request.height, width=request.width)
    image = pipeline.image_processor.preprocess(arguments["image"], **size).to(dtype=torch.float32)
    vae_dtype = vae.dtype  # kept in fp32 for an SDXL VAE that overflows in fp16 (`_load`)
    full_strength, plain_unet = request.strength == 1.0, unet.config.in_channels == 4
    _, noise, *encoded = pipeline.prepare_latents(
        batch,
        vae.config.latent_channels,
        request.height,
        request.width,
        dtype,
        device,
        generators,
        image=image,
        timestep=first,
        is_strength_max=full_strength,
        return_noise=True,
        return_image_latents=plain_unet or not full_strength,  # encoded either way, as the pipeline does
    )
    image_latents = encoded[0] if encoded else None
    mask_condition = pipeline.mask_processor.preprocess(arguments["mask_image"], **size)
    mask, masked_image_latents = pipeline.prepare_mask_latents(
        mask_condition, image * (mask_condition < 0.5), batch, *size.values(), dtype, device, generators, cfg
    )
    if vae.dtype != vae_dtype:  # SDXL's preparation casts a force_upcast VAE back to the latents' dtype: undone
        vae.to(vae_dtype)
    clean = None if full_strength else image_latents
    repainted = mask.chunk(2)[0] if cfg else mask
    if not plain_unet:
        extra = torch.cat([mask, masked_image_latents], dim=1)
        model = denoiser(extra_channels=extra)
        return LatentRun(model, noise, begin_index, clean, region=repainted)

    def put_back_known_region(index: int, sample: torch.Tensor) -> torch.Tensor:
        known = image_latents
        if index < len(timesteps) - 1:
            known = scheduler.add_noise(image_latents, noise, torch.tensor([timesteps[index + 1]]))
        return (1 - repainted) * known + repainted * sample

    return LatentRun(denoiser(), noise, begin_index, clean, put_back_known_region, repainted)


def guidance_views(
    pipeline, latent_rgb: LatentRGB | None, request: Request, region: torch.Tensor | None, info: dict
) -> tuple[View, View]:
    """(What the color loss sees, what CLIP sees) of the predicted latents for a checked request, recorded in
    `info`: color through `color_decoder`, CLIP always through the VAE decoder (cutouts need real detail), only the
    repainted region where there is one; `latent_rgb` is the model's cheap map (`model_latent_rgb`)."""
    color, clip = View(), View()
    if request.color_rgb is not None:
        decode, info["color_decoder"] = guidance_decoder(pipeline, latent_rgb, request.color_decoder)
        color = View(decode, SD_COLOR_VAE_FRACTION if info["color_decoder"].startswith("vae") else 1.0)
    if clip_guided(request):
        decode = guidance_decoder(pipeline, latent_rgb, "vae")[0]
        if region is not None:  # inpainting: CLIP judges the repainted area over the input's own pixels elsewhere
            decode = _repainted_only(decode, region)
        clip = View(decode, SD_CLIP_GUIDED_FRACTION)
        if request.clip_scale > 0:
            info.update(clip_prompt=request.clip_prompt, clip_scale=request.clip_scale)
        if request.clip_image_scale > 0:
            info.update(clip_image=image_fingerprint(request.clip_image), clip_image_scale=request.clip_image_scale)
        info.update(cuts=request.cuts, clip_model=recorded_name(get_clip(request.model).name))
    return color, clip


def _repainted_only(decode: Callable, region: torch.Tensor) -> Callable:
    """`decode`, with the image outside the repainted region detached (it draws no gradient)."""

    def decode_region(latents: torch.Tensor) -> torch.Tensor:
        images = decode(latents)
        weight = torch.nn.functional.interpolate(region.to(images.dtype), size=images.shape[-2:], mode="nearest")
        return weight * images + (1 - weight) * images.detach()

    return decode_region


def model_latent_rgb(pipeline, ref: str) -> LatentRGB | None:
    """The cheap linear latent-to-RGB map of a checkpoint (its latent_rgb.json, or SD 1.x's), None without one."""
    return latent_rgb_for(ref if os.path.isdir(ref) else None, pipeline.vae.config)


def guidance_decoder(
    pipeline, latent_rgb: LatentRGB | None, kind: str = "auto"
) -> tuple[Callable[[torch.Tensor], torch.Tensor], str]:
    """What a loss sees of the predicted latents, and its name for the parameters: the cheap linear latent-to-RGB
    map `latent_rgb` (shipped beside the model, or SD 1.x's) or the VAE decoder (exact; backpropagating through it
    costs about one more decode per step). "auto" takes the model's recommendation (`color_decoder` in its
    latent_rgb.json), else the cheap map where there is one."""
    if kind == "auto":
        kind = "vae" if latent_rgb is None else latent_rgb.recommended or "cheap"
    if kind == "cheap":
        if latent_rgb is None:
            raise ValueError(
                "color_decoder 'cheap' needs a latent-to-RGB map, and this model has none (no latent_rgb.json, not "
                'an SD 1.x VAE); choose "vae" or "auto" ("Color decoder" in the page)'
            )
        return latent_rgb, f"cheap: linear latent-to-RGB map ({latent_rgb.source})"
    vae = pipeline.vae
    return lambda x0: vae.decode(x0.to(vae.dtype) / vae.config.scaling_factor).sample.float(), "vae: the VAE decoder"


def preview_renderer(latent_rgb: LatentRGB | None, size: tuple[int, int]) -> Callable[[torch.Tensor], list] | None:
    """Predicted latents -> preview images of `size` through the cheap latent-to-RGB map; None without a map."""
    return None if latent_rgb is None else lambda latents: latent_previews(latents, latent_rgb, size)


@torch.no_grad()
def _decode(pipeline, latents: torch.Tensor, generators: list[torch.Generator]) -> tuple[list, list | None]:
    """(PIL images, NSFW flags) of clean latents: VAE decode and safety checker, as the pipelines end."""
    vae = pipeline.vae
    decoded = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor, return_dict=False, generator=generators)[0]
    nsfw = None  # SDXL's pipelines ship no safety checker
    if hasattr(pipeline, "run_safety_checker"):
        decoded, nsfw = pipeline.run_safety_checker(decoded, decoded.device, pipeline.text_encoder.dtype)
    denormalize = [True] * len(decoded) if nsfw is None else [not flag for flag in nsfw]
    return pipeline.image_processor.postprocess(decoded, output_type="pil", do_denormalize=denormalize), nsfw


def _unstarted(request: Request) -> list[Image.Image]:
    """The images of a run stopped before its first step: the input (img2img, inpaint) or mid-gray."""
    if request.task == "txt2img":
        return [Image.new("RGB", (request.width, request.height), (128, 128, 128)) for _ in range(request.batch_size)]
    return [request.image.resize((request.width, request.height)) for _ in range(request.batch_size)]


def generate(
    request: Request,
    on_step: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_preview: PreviewCallback | None = None,
) -> GenerationResult:
    """Validate and run one txt2img / img2img / inpaint request on the one guided loop; `on_preview(done, total,
    images)` receives the predicted latents through the cheap latent-to-RGB map now and then (none for a VAE that
    has no map); `should_stop()` ends the run at the end of a step or inside it, at the next block of the text
    encoder, VAE, UNet or guiding CLIP, with the images the last completed step predicted."""
    started = time.perf_counter()
    request = validate(request)
    pipeline, ref = build_pipeline(request.task, request.scheduler, request.model)
    with applied(pipeline, request.loras):  # the request's LoRAs, and only them, while it runs
        return _generate(request, pipeline, ref, started, on_step, should_stop, on_preview)


def _generate(
    request: Request,
    pipeline,
    ref: str,
    started: float,
    on_step: Callable[[int, int], None] | None,
    should_stop: Callable[[], bool] | None,
    on_preview: PreviewCallback | None,
) -> GenerationResult:
    """`generate` once the request is checked and its pipeline built (its LoRAs applied)."""
    warnings = [*request.warnings]
    if not request.prompt:
        warnings.append("prompt is empty: the images are unconditioned (nothing for the CFG scale to steer toward)")
    info = _info(request, ref, warnings)
    info["prompt_reading"] = how_read(pipeline.tokenizer, without_lora_tags(request.prompt))
    total = denoising_steps(request) + hires_denoising_steps(request)
    nsfw = None
    latent_rgb = model_latent_rgb(pipeline, ref)  # read once: previews and color guidance share it
    preview = previewing(on_preview, preview_renderer(latent_rgb, (request.width, request.height)))

    def callback(step: int, steps: int, predicted_x0: torch.Tensor) -> None:
        # `total`, not the loop's own count: the hires fix's two passes count as one run
        if on_step is not None:
            on_step(step + 1, total)
        preview(step + 1, total, predicted_x0)
        if should_stop is not None and should_stop():
            raise SamplingInterrupted(step + 1, predicted_x0)

    if request.task != "txt2img" and total == 0:
        generated = [request.image.copy() for _ in range(request.batch_size)]
        warnings.append("strength x steps is below 1, so no denoising step ran: the input is returned unchanged")
    else:
        count = request.particles  # rows per image: its particles (guidance.particles), 1 for a plain run
        rows = seeded_generators(request.seed, request.batch_size, particles=count)
        generators = rows[::count]  # each image's own, which decodes it
        # A long step (SD 1.5 at 1024x1024 on a CPU: about 90 s) stops inside, at the next block of the models.
        try:
            checked = [pipeline.text_encoder, getattr(pipeline, "text_encoder_2", None), pipeline.vae.encoder]
            checked = [module for module in checked if module is not None] + [pipeline.unet]
            # Guidance passes: the VAE decoder (forward and backward) and the guiding CLIP.
            checked += [pipeline.vae.decoder, *([get_clip(request.model).model] if clip_guided(request) else [])]
            with stop_checks(checked, should_stop):
                run = _prepare(pipeline, replace(request, batch_size=request.batch_size * count), rows)
                views = guidance_views(pipeline, latent_rgb, request, run.region, info)
                terms = guidance_terms(request, request.clip_prompt, run.region, *views)
                latents = guided_sample(
                    run.model,
                    pipeline.scheduler,
                    run.noise,
                    request.steps,
                    terms,
                    generator=rows,
                    callback=callback,
                    begin_index=run.begin_index,
                    clean=run.clean,
                    after_step=run.after_step,
                    weighting="signal",  # with CFG, edits made at high noise do not survive (docs/stable-diffusion.md)
                    particles=particle_run(request.seed, request.batch_size, count),
                )
                try:
                    if hires_denoising_steps(request):
                        latents = _hires_pass(pipeline, request, latents, rows, terms, callback, request.steps)
                    elif request.task == "txt2img" and request.hires_scale > 1:  # enlarged, nothing to repaint
                        latents = _enlarged(pipeline, request, latents, generators)
                except StopRequested as stop:  # stopped while enlarging: the first pass's images
                    raise SamplingInterrupted(request.steps, latents) from stop
            generated, nsfw = _decode(pipeline, latents, generators)
        except (SamplingInterrupted, StopRequested) as stop:
            done = getattr(stop, "step", 0)  # StopRequested: before the loop (prompt or input encoding)
            info.update(interrupted=True, stopped_after_step=done, total_steps=total)
            generated, nsfw = _decode(pipeline, stop.predicted_x0, generators) if done else (_unstarted(request), None)
    images = list(map(_finisher(request), generated))
    unet = pipeline.unet
    info.update(
        interrupted=info.get("interrupted", False),
        nsfw_content_detected=[bool(flag) for flag in (nsfw or [False] * len(images))],
        device=str(unet.device),
        dtype=str(unet.dtype).removeprefix("torch."),
        elapsed_seconds=round(time.perf_counter() - started, 3),
    )
    return package([(image, request.seed + index, request.task) for index, image in enumerate(images)], info)


@gpu(duration=sd_seconds)
def generate_steps(
    request: Request, stop: StopToken | None = None, previews: bool = False
) -> Iterator[StepDone | Preview | JobFailed | GenerationResult]:
    """`generate` as the app (and ZeroGPU) runs it: picklable arguments in, a StepDone per step (and a Preview
    now and then, with `previews`), then the result or a JobFailed; a set `stop` token, or closing the generator,
    ends the run within one step."""
    yield from stream_job(generate, request, stop, previews)
