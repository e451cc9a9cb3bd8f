"""Unconditional pixel-space diffusion (DDPM-family checkpoints), plain or guided by color and CLIP losses."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DiffusionPipeline, DPMSolverMultistepScheduler, UNet2DModel
from diffusers.utils.torch_utils import randn_tensor

from guidance import ClipLoss, GuidanceTerm, SamplingInterrupted, guided_sample, stop_checks
from guidance.sampler import RECURRENT_SCHEDULERS
from pipelines.budget import unconditional_seconds
from pipelines.bundled import recorded_name
from pipelines.cache import MODELS
from pipelines.clip import get_clip
from pipelines.config import check_model, model_location, uncond_models
from pipelines.device import default_device, model_dtype
from pipelines.gpu import gpu
from pipelines.jobs import JobFailed, Preview, StepDone, StopToken, stream_job
from pipelines.limits import Work, check_work, server_limits
from pipelines.outputs import GenerationResult, package, tensor_to_pil, upscale_for_display
from pipelines.params import PIXEL, request_fields
from pipelines.previews import PreviewCallback, pixel_previews, previewing
from pipelines.reference import uses_reference_set
from pipelines.seeds import seeded_generators
from pipelines.terms import clip_guided, effective_particles, guidance_terms, is_guided, particle_run
from pipelines.validation import (
    checked_values,
    clip_text_scale,
    color_target,
    image_fingerprint,
    reference_image,
    resolve_seed,
)

# Schedulers that work in the alphas_cumprod parameterisation the guidance math assumes: class and options.
SCHEDULER_CLASSES: dict[str, tuple[type, dict]] = {
    "DDIM": (DDIMScheduler, {}),
    "DDPM": (DDPMScheduler, {}),
    "DPM++ 2M": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2}),
}
SCHEDULERS: dict[str, Callable] = {
    name: (lambda config, kind=kind, options=options: kind.from_config(config, **options))
    for name, (kind, options) in SCHEDULER_CLASSES.items()
}
# The choices that can retake a step: those whose scheduler keeps no state between steps.
RECURRENT = tuple(name for name, (kind, _) in SCHEDULER_CLASSES.items() if kind.__name__ in RECURRENT_SCHEDULERS)
MAX_STEPS, MAX_BATCH = PIXEL["steps"].high, PIXEL["batch_size"].high
MAX_COLOR_SCALE, MAX_CLIP_SCALE = PIXEL["color_scale"].high, PIXEL["clip_scale"].high
DEFAULT_COLOR_SCALE, DEFAULT_CLIP_SCALE = PIXEL["color_scale"].clear, PIXEL["clip_scale"].clear
MAX_RECURRENCE = PIXEL["recurrence"].high


@dataclass
class Request(request_fields("PixelKeywords", PIXEL)):
    """Everything one unconditional/guided generation needs: a field for every keyword of the pixel tabs but
    batch_count and previews (pipelines.params.PIXEL: defaults and meanings; a model of None is the first
    configured), then what validation sets."""

    color_rgb: tuple[float, float, float] | None = field(default=None, repr=False)
    warnings: list[str] = field(default_factory=list, repr=False)  # set by validate: what changes what you get

    def work(self) -> Work:
        """The compute this (checked) request asks for, in the limits' units."""
        return request_work(self, native_side(self.model))


def validate(request: Request) -> Request:
    """A checked copy of `request` with the model and seed resolved and the color parsed; ValueError names bad
    fields."""
    model = request.model or uncond_models()[0]
    check_model(model)
    values = checked_values(request, PIXEL, own=("model", "seed"))
    checked_request = Request(model=model, **values, seed=resolve_seed(request.seed, values["batch_size"]))
    checked_request.clip_image = reference_image(request.clip_image, checked_request.clip_image_scale)
    checked_request.color_rgb = color_target(checked_request.color, checked_request.color_scale)
    checked_request.clip_scale = clip_text_scale(
        "prompt", checked_request.prompt, checked_request.clip_scale, checked_request.clip_image
    )
    checked_request.clip_method, checked_request.warnings = effective_clip_method(checked_request)
    recurrence, warnings = effective_recurrence(checked_request)
    checked_request.recurrence = recurrence
    checked_request.warnings += warnings
    checked_request.particles, warnings = effective_particles(checked_request)
    checked_request.warnings += warnings
    check_work(checked_request.work(), server_limits())
    return checked_request


def effective_clip_method(request: Request) -> tuple[str, list[str]]:
    """(The way a checked request's CLIP guidance steers, warnings): "auto" resolves to "data set" where the model
    ships its training images (pipelines.reference), else "cutouts"; "data set" on a model without them runs as
    "cutouts" with a warning."""
    if uses_reference_set(request.clip_method, model_location(request.model)):
        return "data set", []
    warnings = []
    if request.clip_method == "data set" and clip_guided(request):
        warnings.append(
            "clip_method 'data set' needs a model that ships its training images, and this one does not: it ran with "
            "cutouts"
        )
    return "cutouts", warnings


def effective_recurrence(request: Request) -> tuple[int, list[str]]:
    """(The recurrence a checked request runs with, warnings): 1 with a warning when guidance asks for more with a
    scheduler that cannot retake a step (DPM++ 2M keeps a history), so that its default never refuses a scheduler."""
    if request.recurrence > 1 and is_guided(request) and request.scheduler not in RECURRENT:
        return 1, [
            f"recurrence {request.recurrence} needs the {' or '.join(RECURRENT)} scheduler: {request.scheduler} ran "
            "with recurrence 1"
        ]
    return request.recurrence, []


def request_work(request: Request, side: int) -> Work:
    """The compute a checked request asks for, on a model of native `side` pixels (0: unknown, counts no pixels)."""
    guided = is_guided(request)
    guided_passes = (3 if request.gradient_method == "unet" else 1) * request.recurrence
    passes = (guided_passes if guided else 1) + (1 if guided and request.compare else 0)
    cuts = request.cuts if clip_guided(request) and request.clip_method == "cutouts" else 0  # data set: no CLIP
    takes = request.recurrence if guided else 1
    particles = request.particles if guided else 1
    return Work(
        request.steps,
        request.batch_size,
        side,
        side,
        cuts=cuts,
        passes=passes,
        takes=takes,
        native_pixels=side * side,
        particles=particles,
    )


_NATIVE_SIDES: dict[str, int] = {}


def native_side(model: str) -> int:
    """The image side a model choice generates, from its UNet config alone (no weights); 0 when the config cannot
    be read here (the load then reports why; a failure is not cached, the next request tries again)."""
    location = model_location(model)
    if location not in _NATIVE_SIDES:
        try:
            config = UNet2DModel.load_config(location, subfolder="unet")
        except Exception:  # noqa: BLE001 - the model load that follows says what is wrong, once
            return 0
        size = config.get("sample_size", 0)
        _NATIVE_SIDES[location] = int(size if isinstance(size, int) else size[0])
    return _NATIVE_SIDES[location]


@dataclass
class UnconditionalModel:
    """A loaded UNet and the scheduler config it was trained with."""

    unet: torch.nn.Module
    scheduler_config: dict
    ref: str


def load_unconditional(ref: str, device: torch.device) -> UnconditionalModel:
    """Load a DDPM-style pipeline (hub id or local folder) and keep its UNet on `device`, frozen."""
    pipeline = DiffusionPipeline.from_pretrained(ref, torch_dtype=model_dtype(device))
    unet = pipeline.unet.to(device).eval().requires_grad_(False)
    return UnconditionalModel(unet=unet, scheduler_config=dict(pipeline.scheduler.config), ref=ref)


def get_unconditional(model: str) -> UnconditionalModel:
    """The model for a model choice, loaded on first use and cached for the life of the process."""
    device, ref = default_device(), model_location(model)
    return MODELS.get(("unconditional", ref, str(device)), lambda: load_unconditional(ref, device))


def make_scheduler(name: str, config: dict):
    """A fresh scheduler of kind `name` from a model's scheduler config (never shared between requests)."""
    return SCHEDULERS[name](config)


def run_sampler(
    model: UnconditionalModel,
    request: Request,
    terms: list[GuidanceTerm],
    callback=None,
) -> torch.Tensor:
    """Sample `request.batch_size` images (B, C, H, W) in [-1, 1] for a validated request (each image as
    `request.particles` particles when guided)."""
    unet = model.unet
    device = next(unet.parameters()).device
    size = unet.config.sample_size
    height, width = (size, size) if isinstance(size, int) else size
    count = request.particles if terms else 1
    generators = seeded_generators(request.seed, request.batch_size, particles=count)
    noise = randn_tensor(
        (request.batch_size * count, unet.config.in_channels, height, width),
        generator=generators,
        device=device,
        dtype=torch.float32,
    )
    return guided_sample(
        unet,
        make_scheduler(request.scheduler, model.scheduler_config),
        noise,
        request.steps,
        terms,
        generator=generators,
        eta=request.eta if request.scheduler == "DDIM" else None,
        gradient_method=request.gradient_method,
        callback=callback,
        recurrence=request.recurrence,
        particles=particle_run(request.seed, request.batch_size, count),
    )


def request_info(request: Request) -> dict:
    """The parameters recorded in the info panel and in every PNG."""
    info = {key: value for key, value in asdict(request).items() if key not in ("color_rgb", "clip_image", "warnings")}
    info["seeds"] = [request.seed + index for index in range(request.batch_size)]
    if request.color_scale == 0:
        info.pop("color")
    if request.clip_scale == 0:
        info.pop("prompt")
    if request.clip_image_scale == 0:
        info.pop("clip_image_scale")
    else:
        info["clip_image"] = image_fingerprint(request.clip_image)
    if request.clip_scale == 0 and request.clip_image_scale == 0:
        info.pop("cuts")
        info.pop("clip_method")
    else:
        if request.clip_method == "data set":
            info.pop("cuts")
        info["clip_model"] = recorded_name(get_clip(request.model).name)
    if request.scheduler != "DDIM":
        info.pop("eta")
    if not is_guided(request):
        info.pop("recurrence")
    if request.particles == 1:
        info.pop("particles")  # a plain run records what it always did
    if request.warnings:
        info["warnings"] = list(request.warnings)
    return info


def generate(
    request: Request,
    on_step: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_preview: PreviewCallback | None = None,
) -> GenerationResult:
    """Validate, sample (guided when any scale is above 0) and package images with their parameters.

    `on_step(done, total)` reports progress; `on_preview(done, total, images)` receives the predicted clean images
    every few steps or about once a second (`pipelines.previews`); when `should_stop()` turns true the run stops at
    the end of the step, or inside it at the next block of the UNet or CLIP, and returns the predicted clean images
    of the last completed step, marked `interrupted` in the info.
    """
    started = time.perf_counter()
    request = validate(request)
    model = get_unconditional(request.model)
    terms = guidance_terms(request, request.prompt)
    runs = [("guided" if terms else "unguided", terms)]
    if request.compare and terms:
        runs.append(("unguided", []))
    total = request.steps * len(runs)
    info = request_info(request)
    images: list[tuple] = []  # (image, seed, kind)
    preview = previewing(on_preview, pixel_previews)
    for run_index, (label, run_terms) in enumerate(runs):
        offset = run_index * request.steps

        def callback(step: int, steps: int, predicted_x0: torch.Tensor, offset=offset) -> None:
            if on_step is not None:
                on_step(offset + step + 1, total)
            preview(offset + step + 1, total, predicted_x0)
            if should_stop is not None and should_stop():
                raise SamplingInterrupted(step + 1, predicted_x0)

        checked = [model.unet, *(term.loss.model for term in run_terms if isinstance(term.loss, ClipLoss))]
        try:
            with stop_checks(checked, should_stop):  # a long step (big batch, many cutouts) stops within a block
                samples = run_sampler(model, request, run_terms, callback)
        except SamplingInterrupted as stop:
            samples = stop.predicted_x0
            info.update(interrupted=True, stopped_after_step=offset + stop.step, total_steps=total)
        images += [
            (upscale_for_display(image), request.seed + index, label)
            for index, image in enumerate(tensor_to_pil(samples))
        ]
        if info.get("interrupted"):
            break
    unet = model.unet
    if images and images[0][0].size != tuple(samples.shape[-1:-3:-1]):
        info["upscaled_from"] = f"{samples.shape[-1]}x{samples.shape[-2]}"  # small models are shown enlarged
    info.update(
        device=str(next(unet.parameters()).device),
        dtype=str(unet.dtype).removeprefix("torch."),
        elapsed_seconds=round(time.perf_counter() - started, 3),
        interrupted=info.get("interrupted", False),
    )
    return package(images, info)


@gpu(duration=unconditional_seconds)
def generate_steps(
    request: Request, stop: StopToken | None = None, previews: bool = False
) -> Iterator[StepDone | Preview | JobFailed | GenerationResult]:
    """`generate` as the app (and ZeroGPU) runs it: picklable arguments in, a StepDone per step (and a Preview now
    and then, with `previews`), then the result or a JobFailed; a set `stop` token, or closing the generator, ends
    the run within one step."""
    yield from stream_job(generate, request, stop, previews)
