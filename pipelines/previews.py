"""Live previews: the predicted clean image of a running job, shown every few steps or about once a second,
whichever is rarer. Pixel models show x0 itself; latent models their cheap linear latent-to-RGB map, upscaled,
never a VAE decode (a preview must cost next to nothing beside a step)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from PIL import Image

from pipelines.config import setting
from pipelines.outputs import tensor_to_pil, upscale_for_display

PREVIEW_SECONDS_ENV = "STUDIO_PREVIEW_SECONDS"
PREVIEW_STEPS_ENV = "STUDIO_PREVIEW_STEPS"
DEFAULT_PREVIEW_SECONDS = 1.0
DEFAULT_PREVIEW_STEPS = 3

PreviewCallback = Callable[[int, int, list[Image.Image]], None]  # (steps done, total steps, images)


@dataclass
class PreviewClock:
    """Says when a preview is due: at least `min_steps` steps and `min_seconds` since the last one (or the start),
    never on the last step, whose images the final result shows."""

    min_steps: int
    min_seconds: float
    last_done: int = 0
    last_time: float = field(default_factory=time.monotonic)

    def due(self, done: int, total: int, now: float | None = None) -> bool:
        """Whether to show a preview after step `done` of `total` at time `now` (default: now), and if so, count it
        as shown."""
        now = time.monotonic() if now is None else now
        if done >= total or done - self.last_done < self.min_steps or now - self.last_time < self.min_seconds:
            return False
        self.last_done, self.last_time = done, now
        return True


def preview_clock() -> PreviewClock:
    """A clock started now, with this server's spacing (`STUDIO_PREVIEW_STEPS`, `STUDIO_PREVIEW_SECONDS`)."""
    return PreviewClock(
        setting(PREVIEW_STEPS_ENV, DEFAULT_PREVIEW_STEPS, minimum=1),
        setting(PREVIEW_SECONDS_ENV, DEFAULT_PREVIEW_SECONDS, minimum=0.0, kind=float),
    )


def pixel_previews(predicted_x0: torch.Tensor) -> list[Image.Image]:
    """A pixel model's predicted clean images (B, 3, H, W) in [-1, 1], enlarged as its results are."""
    return [upscale_for_display(image) for image in tensor_to_pil(predicted_x0)]


@torch.no_grad()
def latent_previews(
    latents: torch.Tensor, latent_rgb: Callable[[torch.Tensor], torch.Tensor], size: tuple[int, int]
) -> list[Image.Image]:
    """Predicted clean latents through the cheap latent-to-RGB map, upscaled (bilinear) to the (width, height) of
    the final images."""
    images = latent_rgb(latents.float())
    images = torch.nn.functional.interpolate(images, size=(size[1], size[0]), mode="bilinear", align_corners=False)
    return tensor_to_pil(images)


def previewing(
    on_preview: PreviewCallback | None, render: Callable[[torch.Tensor], list[Image.Image]] | None
) -> Callable[[int, int, torch.Tensor], None]:
    """A step hook `(done, total, predicted_x0)` that sends `render(predicted_x0)` to `on_preview` when a preview is
    due; a no-op without a callback or a renderer."""
    if on_preview is None or render is None:
        return lambda done, total, predicted_x0: None
    clock = preview_clock()

    def hook(done: int, total: int, predicted_x0: torch.Tensor) -> None:
        if clock.due(done, total):
            on_preview(done, total, render(predicted_x0))

    return hook
