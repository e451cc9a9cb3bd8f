"""Color guidance: a per-sample loss pulling the predicted clean image toward one RGB color."""

from __future__ import annotations

from typing import Sequence

import torch


def color_loss(predicted_x0: torch.Tensor, target_rgb: Sequence[float]) -> torch.Tensor:
    """Mean squared distance, per sample, of the image (x0 mapped from [-1, 1] to [0, 1]) to `target_rgb`.

    Returns a tensor of shape (batch,): one loss per image, so a batch never dilutes an image's gradient.
    """
    if predicted_x0.shape[1] != 3:
        raise ValueError(f"color guidance needs 3-channel images, got {predicted_x0.shape[1]} channels")
    image = (predicted_x0.float() + 1) / 2
    target = torch.as_tensor(target_rgb, device=image.device, dtype=image.dtype).view(1, 3, 1, 1)
    return (image - target).pow(2).mean(dim=(1, 2, 3))


def color_distance(images: torch.Tensor, target_rgb: Sequence[float]) -> torch.Tensor:
    """Mean absolute distance, per image, of images in [0, 1] (B, 3, H, W) to `target_rgb`: the adherence metric."""
    target = torch.as_tensor(target_rgb, device=images.device, dtype=torch.float32).view(1, 3, 1, 1)
    return (images.float() - target).abs().mean(dim=(1, 2, 3))


def masked_color_loss(predicted_x0: torch.Tensor, target_rgb: Sequence[float], weight: torch.Tensor) -> torch.Tensor:
    """`color_loss` over the region `weight` (B or 1, 1, h, w) in [0, 1] marks (resized to the image by area): what
    lies outside it neither counts nor draws a gradient."""
    image = (predicted_x0.float() + 1) / 2
    target = torch.as_tensor(target_rgb, device=image.device, dtype=image.dtype).view(1, 3, 1, 1)
    weight = weight.to(device=image.device, dtype=image.dtype)
    if weight.shape[-2:] != image.shape[-2:]:
        weight = torch.nn.functional.interpolate(weight, size=image.shape[-2:], mode="area")
    squared = (image - target).pow(2).mean(dim=1, keepdim=True) * weight
    return squared.sum(dim=(1, 2, 3)) / weight.sum(dim=(1, 2, 3)).clamp_min(1e-8)


class ColorLoss:
    """Loss callable for the guided sampler: predicted_x0 -> per-sample color loss, over the whole image or over
    the region a `weight` map marks (inpainting: the repainted area)."""

    def __init__(self, target_rgb: Sequence[float], weight: torch.Tensor | None = None):
        self.target_rgb = tuple(float(c) for c in target_rgb)
        self.weight = weight

    def __call__(self, predicted_x0: torch.Tensor) -> torch.Tensor:
        if self.weight is None:
            return color_loss(predicted_x0, self.target_rgb)
        return masked_color_loss(predicted_x0, self.target_rgb, self.weight)
