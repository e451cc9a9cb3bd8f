"""Every API keyword of the six endpoints, once: its type, range or choices, default, page label, PNG key, one-line
description and whether a sweep may vary it. Validation, the page's controls, the endpoints' signatures and
docstrings (and so the MCP schema), the PNG parameters, sweeps, the batch command and the ZeroGPU duration read this
table; adding a keyword is one entry here plus the code that uses it.

Two families of tabs read it: the pixel-model tabs (PIXEL) and the Stable Diffusion tabs (SD), which share most
entries and differ in some ranges, defaults and descriptions; a tab may start a control elsewhere (TAB_DEFAULTS)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, make_dataclass, replace

from PIL import Image

from guidance.particles import RESAMPLE_EVERY
from pipelines.tabs import SD_TABS

PICTURE = Image.Image  # the kind of a picture keyword: an upload, never a plain value
COLORS = "#RRGGBB, #RGB, rgb(), hsl() or a CSS name"


@dataclass(frozen=True)
class Param:
    """One API keyword. `description` may name {low}, {high} and {choices}; `hint` is what a control's label adds in
    parentheses; `clear` is a guidance strength that is clearly visible (what uploading a reference sets)."""

    kind: type  # bool, int, float, str or PICTURE
    label: str  # the page's label, which refusals name beside the keyword
    description: str
    default: object = None  # None where the default is decided per request (the first model, the native size)
    low: float | None = None
    high: float | None = None
    step: float | None = None  # a slider's step
    choices: Sequence | Callable[[], Sequence] | None = None  # a callable for choices read from the pipelines
    png_key: str | None = None  # the key in a PNG's parameters line (stable-diffusion-webui's name where it has one)
    hint: str = ""
    clear: float | None = None

    def options(self) -> tuple:
        """The choices, read now (the model and scheduler lists come from the pipelines)."""
        return tuple(self.choices() if callable(self.choices) else self.choices or ())

    def describe(self) -> str:
        """The one-line description with its range and choices filled in."""
        low, high = (None if bound is None else f"{bound:g}" for bound in (self.low, self.high))
        choices = ", ".join(map(str, self.options())) if "{choices}" in self.description else ""
        return self.description.format(low=low, high=high, choices=choices)

    def page_label(self) -> str:
        """A control's label: the label and its hint."""
        return f"{self.label} ({self.hint})" if self.hint else self.label


def _pixel_schedulers() -> Sequence[str]:
    from pipelines.unconditional import SCHEDULERS

    return tuple(SCHEDULERS)


def _sd_schedulers() -> Sequence[str]:
    from pipelines.stable_diffusion import SD_SCHEDULERS

    return tuple(SD_SCHEDULERS)


def _pixel_models() -> Sequence[str]:
    from pipelines.config import uncond_models

    return uncond_models()


def _sd_models() -> Sequence[str]:
    from pipelines.stable_diffusion import sd_models

    return sd_models()


def _strength(label: str, description: str, high: float, clear: float, png_key: str, step: float = 0.1) -> Param:
    """A guidance strength: 0 turns it off, `clear` is clearly visible."""
    return Param(
        float, label, description, 0.0, 0, high, step, png_key=png_key, hint=f"0 = off, {clear:g} = clear", clear=clear
    )


# The pixel-model tabs (unconditional, color- and CLIP-guided). Strength ranges are calibrated on the bundled emoji
# DDPM and CLIP (docs/bundled-models.md): color 0.75 pulls clearly, CLIP 3 is clearly visible, beyond about 10 CLIP
# turns into adversarial texture. Recurrence 3 in the CLIP-guided tab turns CLIP's smudges back into the model's
# images; DDIM's eta defaults to ancestral (1), which keeps the bundled model's samples nameable.
PIXEL: dict[str, Param] = {
    "model": Param(
        str,
        "Model",
        "the diffusion model: one of the configured models (UNCOND_MODELS; the bundled emoji model offline); none: the "
        "first",
        choices=_pixel_models,
        png_key="Model",
    ),
    "scheduler": Param(str, "Scheduler", "the sampler: {choices}", "DDIM", choices=_pixel_schedulers),
    "steps": Param(int, "Steps", "denoising steps, {low} to {high}", 50, 1, 1000, 1, png_key="Steps"),
    "eta": Param(
        float,
        "Eta",
        "DDIM only: 0 is deterministic, 1 adds fresh noise each step (ancestral)",
        1.0,
        0,
        1,
        0.05,
        png_key="Eta",
        hint="DDIM only; 0 = deterministic, 1 = ancestral",
    ),
    "batch_size": Param(int, "Batch size", "images per batch, {low} to {high}; image i uses seed + i", 1, 1, 8, 1),
    "seed": Param(
        int,
        "Seed",
        "the seed of the first image; -1 draws a random one (the info says which)",
        -1,
        -1,
        2**32 - 1,
        png_key="Seed",
        hint="-1 = random; image i uses seed + i",
    ),
    "color": Param(str, "Target color", f"the target color of color guidance: {COLORS}", "#ff8800", png_key="Color"),
    "color_scale": _strength(
        "Color strength", "color guidance strength, {low} (off) to {high}", 2.0, 0.75, "Color strength", step=0.05
    ),
    "prompt": Param(
        str, "Prompt", "the text CLIP guidance pulls toward (empty: only the reference picture guides)", ""
    ),
    "clip_scale": _strength(
        "CLIP guidance strength",
        "CLIP guidance strength toward the prompt, {low} (off) to {high}",
        10.0,
        3.0,
        "CLIP strength",
    ),
    "cuts": Param(
        int,
        "Cutouts per image",
        "random crops of each image CLIP judges per step, {low} to {high}; more is steadier and slower",
        4,
        1,
        64,
        1,
        png_key="Cutouts",
    ),
    "clip_method": Param(
        str,
        "CLIP guidance by",
        "how CLIP guidance steers: 'data set' pulls toward the model's own training images that CLIP finds for the "
        "prompt or picture (the exact noisy classifier over them; models that ship their training set, as the "
        "bundled emoji model does), 'cutouts' follows CLIP's gradient on cutouts of the predicted image (any model), "
        "'auto' the first of the two the model allows",
        "auto",
        choices=("auto", "data set", "cutouts"),
        png_key="CLIP method",
        hint="data set: toward the model's training images CLIP picks (bundled emoji model); cutouts: any model",
    ),
    "compare": Param(
        bool,
        "Also show the unguided image of the same seed",
        "also return the unguided image of each seed, after the guided ones",
        False,
    ),
    "gradient_method": Param(
        str,
        "Guidance gradient",
        "how guidance reaches the sample: x0 (fast, no UNet backward pass) or unet (exact, slower)",
        "x0",
        choices=("x0", "unet"),
        png_key="Guidance gradient",
    ),
    "clip_image": Param(
        PICTURE,
        "Reference image",
        "a reference picture CLIP guidance pulls toward (its CLIP image embedding), or none",
        png_key="Reference image",
        hint="CLIP guidance toward a picture",
    ),
    "clip_image_scale": _strength(
        "Reference strength",
        "CLIP guidance strength toward the reference picture, {low} (off) to {high}",
        10.0,
        3.0,
        "Reference strength",
    ),
    "recurrence": Param(
        int,
        "Recurrence",
        "times each guided step is taken (re-noised back in between), {low} to {high}; above 1 keeps strongly guided "
        "images looking like the model's, costs that many times the guided steps (DDIM, DDPM)",
        1,
        1,
        4,
        1,
        png_key="Recurrence",
        hint="each guided step taken this many times: slower, keeps images on the model's data; DDIM and DDPM",
    ),
    "particles": Param(
        int,
        "Particles",
        "each image runs as this many particles, {low} to {high}, resampled every "
        f"{RESAMPLE_EVERY} steps by the guidance losses (Feynman-Kac steering) and the best kept; costs that many "
        "times the compute; 1 is the plain run",
        1,
        1,
        4,
        1,
        png_key="Particles",
        hint="resampled by guidance, best kept; that many times slower",
    ),
    "batch_count": Param(
        int,
        "Batch count",
        "batches run one after another, {low} to {high}, seeds continuing",
        1,
        1,
        8,
        1,
        hint="seeds continue",
    ),
    "previews": Param(
        bool,
        "Live previews",
        "stream the predicted image while it samples (submit); predict returns only the final images",
        True,
        hint="the predicted image every few steps or about once a second, while it samples",
    ),
}

MAX_OUTPAINT = 512  # px added on one side at most
OUTPAINT = tuple(f"outpaint_{side}" for side in ("left", "right", "top", "bottom"))


def _size(side: str) -> Param:
    """Width or height of txt2img: a multiple of 8; none (0) is the model's native size."""
    return Param(
        int,
        side.title(),
        f"image {side} in px, a multiple of 8 from {{low}} to {{high}}; 0 or none: native",
        None,
        64,
        1024,
        8,
    )


def _outpaint(side: str) -> Param:
    """Pixels outpainting adds on one side."""
    return Param(
        int,
        f"Outpaint {side}",
        f"outpainting: px added on the {side}, a multiple of 8 from {{low}} to {{high}}",
        0,
        0,
        MAX_OUTPAINT,
        8,
        png_key=f"Outpaint {side}",
        hint="px",
    )


# The Stable Diffusion tabs (txt2img, img2img, inpainting). Color strength is in RMS latent units over a run, CLIP's
# and the CFG scale as diffusers has them; the clear strengths are calibrated on the bundled emoji SD model
# (docs/stable-diffusion.md).
MAX_SD_STEPS = 150  # the SD tabs' steps slider, and the hires fix's second pass
SD: dict[str, Param] = {
    "image": Param(
        PICTURE,
        "Input image",
        "the input picture (any mode and size; worked on at a multiple of 8, returned at its own size)",
    ),
    "mask": Param(
        PICTURE,
        "Mask",
        "white pixels (or any paint on a transparent layer) are repainted, the rest kept exactly; optional when "
        "outpainting",
        hint="white = repaint",
    ),
    "prompt": Param(
        str,
        "Prompt",
        "what to draw; (word:1.3), (word), [word] weigh words as in stable-diffusion-webui, <lora:name:0.8> applies "
        "one of the server's LoRAs (LORA_DIR, LORAS), and a prompt past 77 tokens is read whole in chunks",
        "",
    ),
    "negative_prompt": Param(
        str,
        "Negative prompt",
        "what to steer away from (classifier-free guidance's negative branch); weights work here too",
        "",
    ),
    "scheduler": Param(str, "Scheduler", "the sampler: {choices}", "DPM++ 2M Karras", choices=_sd_schedulers),
    "steps": replace(
        PIXEL["steps"],
        description="denoising steps, {low} to {high} (img2img and inpainting run strength x steps of them)",
        default=25,
        high=MAX_SD_STEPS,
    ),
    "guidance_scale": Param(
        float,
        "Guidance scale (CFG)",
        "classifier-free guidance (CFG) scale, {low} to {high}",
        7.5,
        0,
        30.0,
        0.5,
        png_key="CFG scale",
    ),
    "width": _size("width"),
    "height": _size("height"),
    "batch_size": replace(PIXEL["batch_size"], label="Number of images", high=4),
    "seed": PIXEL["seed"],
    "strength": Param(
        float,
        "Strength",
        "how much of the input is re-noised: 0 keeps it, 1 replaces it",
        0.75,
        0,
        1,
        0.01,
        png_key="Denoising strength",
        hint="0 keeps the input, 1 replaces it",
    ),
    "hires_scale": Param(
        float,
        "Hires fix: upscale by",
        "txt2img's hires fix: make the image at width x height, enlarge it by this factor, {low} (off) to {high}, and "
        "repaint it there at `strength` (stable-diffusion-webui's Hires. fix)",
        1.0,
        1.0,
        2.0,
        0.05,
        png_key="Hires upscale",
        hint="1 = off",
    ),
    "hires_upscaler": Param(
        str,
        "Hires upscaler",
        "how the hires fix enlarges the first image: {choices} (Latent: its latents, bilinear, wants strength 0.5 or "
        "more; Lanczos: the decoded image, encoded again)",
        "Latent",
        choices=("Latent", "Lanczos"),
        png_key="Hires upscaler",
    ),
    "hires_steps": Param(
        int,
        "Hires steps",
        "steps of the hires fix's second pass, {low} to {high} (0: as many as the first); it runs strength x steps",
        0,
        0,
        MAX_SD_STEPS,
        1,
        png_key="Hires steps",
        hint="0 = as the first pass",
    ),
    "mask_blur": Param(
        int,
        "Mask blur",
        "px of inward feathering where the repainted area meets the original, {low} to {high}",
        4,
        0,
        64,
        1,
        png_key="Mask blur",
        hint="px, inward",
    ),
    "model": replace(
        PIXEL["model"],
        description="the Stable Diffusion checkpoint, one of the server's SD_MODELS (SD 1.x, SD 2.x, SDXL; the bundled "
        "emoji model when present); none: the first",
        choices=_sd_models,
    ),
    "color": replace(PIXEL["color"], default="#1e90ff"),
    "color_scale": replace(PIXEL["color_scale"], high=10.0, step=0.1, hint="0 = off, 1.5 = clear", clear=1.5),
    "color_decoder": Param(
        str,
        "Color decoder",
        "what the color loss sees: auto (the model's choice), cheap (linear latent-to-RGB), vae (exact)",
        "auto",
        choices=("auto", "cheap", "vae"),
        png_key="Color decoder",
        hint="auto: the model's choice; cheap: linear latent-to-RGB map, nearly free; vae: exact",
    ),
    "clip_prompt": Param(
        str,
        "CLIP prompt",
        "the text CLIP guidance pulls toward (CLIP_MODEL; the bundled emoji CLIP for the bundled model)",
        "",
        png_key="CLIP prompt",
    ),
    "clip_scale": replace(
        PIXEL["clip_scale"],
        description="CLIP guidance strength toward clip_prompt, {low} (off) to {high}",
        high=20.0,
        hint="0 = off, 4 = clear",
        clear=4.0,
    ),
    "cuts": PIXEL["cuts"],
    "clip_image": PIXEL["clip_image"],
    "clip_image_scale": replace(PIXEL["clip_image_scale"], high=20.0, hint="0 = off, 4 = clear", clear=4.0),
    **{name: _outpaint(name.removeprefix("outpaint_")) for name in OUTPAINT},
    "particles": PIXEL["particles"],
    "batch_count": PIXEL["batch_count"],
    "previews": PIXEL["previews"],
}

# Each endpoint's keywords, in the order of its arguments (and of its controls in the page).
_SD_GUIDANCE = (
    "color",
    "color_scale",
    "color_decoder",
    "clip_prompt",
    "clip_scale",
    "cuts",
    "clip_image",
    "clip_image_scale",
)
KEYWORDS: dict[str, tuple[str, ...]] = {
    "unconditional": ("model", "scheduler", "steps", "batch_size", "seed", "eta", "batch_count", "previews"),
    "color_guided": (
        *("model", "scheduler", "steps", "batch_size", "seed", "color", "color_scale", "compare", "eta"),
        *("gradient_method", "batch_count", "recurrence", "previews"),
    ),
    "clip_guided": (
        *("model", "scheduler", "steps", "batch_size", "seed", "prompt", "clip_scale", "cuts", "color"),
        *("color_scale", "compare", "eta", "gradient_method", "clip_image", "clip_image_scale", "batch_count"),
        *("recurrence", "previews", "particles", "clip_method"),
    ),
    "txt2img": (
        *("prompt", "negative_prompt", "scheduler", "steps", "guidance_scale", "width", "height", "batch_size"),
        *("seed", "model", *_SD_GUIDANCE, "batch_count", "previews", "particles"),
        *("hires_scale", "hires_upscaler", "hires_steps", "strength"),
    ),
    "img2img": (
        *("image", "prompt", "negative_prompt", "scheduler", "steps", "guidance_scale", "strength", "batch_size"),
        *("seed", "model", *_SD_GUIDANCE, "batch_count", "previews", "particles"),
    ),
    "inpaint": (
        *("image", "mask", "prompt", "negative_prompt", "scheduler", "steps", "guidance_scale", "strength"),
        *("batch_size", "seed", "mask_blur", "model", *_SD_GUIDANCE),
        *(*OUTPAINT, "batch_count", "previews", "particles"),
    ),
}
# Where a tab's control starts elsewhere than its family's default: guidance on in the guided tabs, inpainting
# replacing what it repaints.
TAB_DEFAULTS: dict[str, dict[str, object]] = {
    "color_guided": {"color_scale": PIXEL["color_scale"].clear},
    "clip_guided": {"clip_scale": PIXEL["clip_scale"].clear},
    "inpaint": {"strength": 1.0},
    "txt2img": {"strength": 0.7},  # the hires fix's denoising strength (stable-diffusion-webui's default)
}
# What a sweep may vary, in the order its menu lists them (of those a tab takes).
SWEEPABLE = (
    *("strength", "guidance_scale", "clip_scale", "clip_image_scale", "color_scale", "cuts", "steps", "eta"),
    *("recurrence", "particles", "mask_blur", "clip_method", "hires_scale"),
)


# The keywords an endpoint reads itself (how many batches, whether to stream previews): no request has them.
HANDLER_ONLY = ("batch_count", "previews")


def request_fields(name: str, entries: dict[str, Param], first: tuple = ()) -> type:
    """A dataclass `name` of a family's request fields: `first`, then every keyword of `entries` but the handler's
    own, with the table's defaults (None where the default is decided per request; pictures left out of repr). A
    family's request subclasses it, adding what its validation sets."""
    fields = []
    for keyword, entry in entries.items():
        if keyword in HANDLER_ONLY:
            continue
        kind = object if entry.kind is PICTURE else entry.kind
        annotation = kind | None if entry.default is None else kind
        fields.append((keyword, annotation, field(default=entry.default, repr=entry.kind is not PICTURE)))
    return make_dataclass(name, [*first, *fields])


# The picture keywords: uploads, never plain values.
PICTURES = tuple(name for name, entry in (SD | PIXEL).items() if entry.kind is PICTURE)


def table(tab: str | None) -> dict[str, Param]:
    """The entries of a tab's family (the pixel-model tabs' for None or a pixel tab)."""
    return SD if tab in SD_TABS else PIXEL


def param(tab: str, name: str) -> Param:
    """The entry of keyword `name` as tab `tab` has it (its default the tab's own)."""
    entry = table(tab)[name]
    overrides = TAB_DEFAULTS.get(tab, {})
    return replace(entry, default=overrides[name]) if name in overrides else entry


def keywords(tab: str) -> tuple[str, ...]:
    """The keywords of a tab's endpoint, in argument order."""
    return KEYWORDS[tab]


def sweepable(tab: str) -> tuple[str, ...]:
    """The keywords a sweep of `tab` may vary."""
    return tuple(name for name in SWEEPABLE if name in KEYWORDS[tab])


def defaults(tab: str) -> dict[str, object]:
    """Every keyword of a tab with its default there."""
    return {name: param(tab, name).default for name in KEYWORDS[tab]}


def labels() -> dict[str, str]:
    """The page label of each keyword (the pixel tabs' where the families differ), for refusals."""
    return {name: entry.label for name, entry in (SD | PIXEL).items()}


def png_keys() -> dict[str, tuple[str, type]]:
    """{PNG key: (keyword, kind)} of every keyword a PNG records under a key of its own (pictures are recorded by
    fingerprint and not read back)."""
    return {entry.png_key: (name, entry.kind) for name, entry in (SD | PIXEL).items() if entry.png_key}
