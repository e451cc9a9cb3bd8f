"""The six generation tabs, once: their names and labels, and the pipeline family each runs on (its request type,
validation, generation and model choices), so that the page, sweeps, PNG info and the batch command iterate over
this registry instead of branching on a tab's name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from guidance.colors import shown

PIXEL_TABS = ("unconditional", "color_guided", "clip_guided")  # DDPM-family pixel models
SD_TABS = ("txt2img", "img2img", "inpaint")  # Stable Diffusion
TABS = PIXEL_TABS + SD_TABS
LABELS = {
    "unconditional": "Unconditional",
    "color_guided": "Color-guided",
    "clip_guided": "CLIP-guided",
    "txt2img": "txt2img",
    "img2img": "img2img",
    "inpaint": "Inpainting",
}


@dataclass(frozen=True)
class Family:
    """What the tabs of one pipeline family share: how a request is built, checked and run, and its models."""

    request_type: type
    validate: Callable
    generate: Callable  # request -> result, in this process
    generate_steps: Callable  # (request, stop token, previews) -> events then the result (a GPU function)
    models: Callable[[], list[str]]  # the model choices, the default first
    task_field: bool  # whether the request names its tab (`task`): the SD tabs share one request type

    def request(self, tab: str, fields: dict):
        """The request of `tab` with keyword `fields` (not yet validated)."""
        return self.request_type(task=tab, **fields) if self.task_field else self.request_type(**fields)


def is_sd(tab: str | None) -> bool:
    """Whether `tab` runs Stable Diffusion."""
    return tab in SD_TABS


def family(tab: str) -> Family:
    """The pipeline family a tab runs on (the pipelines are imported when first asked for)."""
    if tab not in TABS:
        raise ValueError(f"tab {shown(tab)} is not one of {', '.join(TABS)}")
    if is_sd(tab):
        from pipelines import stable_diffusion as module

        models = module.sd_models
    else:
        from pipelines import unconditional as module
        from pipelines.config import uncond_models as models
    return Family(module.Request, module.validate, module.generate, module.generate_steps, models, is_sd(tab))
