"""CLIP guidance: a per-sample loss between batched cutouts of the predicted image and target embeddings (a text
prompt's, a reference image's, or a weighted mix of both)."""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

# Cutout settings; the first cutout of every image is the whole image (an "overview").
MIN_CUT_SCALE = 0.35  # smallest cutout side, as a fraction of the image side
MAX_ROTATION = math.radians(5.0)  # small affine jitter keeps CLIP from reading pixel-exact adversarial noise
ARCSIN_LIMIT = 1.0 - 1e-6  # arcsin'(1) is infinite; half-chords of unit vectors never exceed 1


def cutout_params(cuts: int, generator: torch.Generator) -> torch.Tensor:
    """Draw `cuts` affine matrices (cuts, 2, 3) in normalised coordinates; the first is the identity."""
    draws = torch.rand(cuts, 5, generator=generator, device=generator.device, dtype=torch.float32).cpu()
    scale = MIN_CUT_SCALE + (1 - MIN_CUT_SCALE) * draws[:, 0]
    flip = torch.where(draws[:, 1] < 0.5, -1.0, 1.0)
    angle = (2 * draws[:, 2] - 1) * MAX_ROTATION
    shift_x = (2 * draws[:, 3] - 1) * (1 - scale)
    shift_y = (2 * draws[:, 4] - 1) * (1 - scale)
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta = torch.stack(
        [torch.stack([cos * flip, -sin, shift_x], dim=-1), torch.stack([sin * flip, cos, shift_y], dim=-1)], dim=1
    )
    theta[0] = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    return theta


def make_cutouts(images: torch.Tensor, cut_size: int, cuts: int, generators: Sequence[torch.Generator]) -> torch.Tensor:
    """All cutouts of all images in one batched resample: (B, C, H, W) -> (B * cuts, C, cut_size, cut_size).

    Image i's cutouts are drawn from generators[i], so an image gets the same cutouts in any batch.
    """
    if len(generators) != images.shape[0]:
        raise ValueError(f"need one generator per image, got {len(generators)} for {images.shape[0]} images")
    theta = torch.cat([cutout_params(cuts, g) for g in generators]).to(images.device, images.dtype)
    grid = F.affine_grid(theta, [theta.shape[0], images.shape[1], cut_size, cut_size], align_corners=False)
    # Average-pool first when shrinking a lot, so the bilinear resample does not alias.
    factor = images.shape[-1] // (cut_size * 2)
    source = F.avg_pool2d(images, factor) if factor >= 2 else images
    return F.grid_sample(
        source.repeat_interleave(cuts, dim=0), grid, mode="bilinear", padding_mode="border", align_corners=False
    )


def spherical_distance(image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
    """Squared great-circle distance between unit-normalised embeddings, in float32."""
    image_embeds = F.normalize(image_embeds.float(), dim=-1)
    text_embeds = F.normalize(text_embeds.float(), dim=-1)
    half_chord = (image_embeds - text_embeds).norm(dim=-1).div(2).clamp(max=ARCSIN_LIMIT)
    return half_chord.arcsin().pow(2).mul(2)


def image_input_dtype(model: torch.nn.Module) -> torch.dtype:
    """The dtype an open_clip model's image tower takes: that of its first convolution or linear layer. open_clip's
    "fp16" precision keeps some parameters (class embedding, layer norms, logit scale) in float32, so the first
    parameter's dtype is not the answer."""
    tower = getattr(model, "visual", model)
    for module in tower.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            return module.weight.dtype
    return next(model.parameters()).dtype


def weighted_target_distance(embeds: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Spherical distance of each embedding (N, D) to each target (K, D), averaged over the targets with `weights`
    (K,) that sum to 1: (N,)."""
    distances = spherical_distance(embeds[:, None, :], targets[None, :, :].to(embeds.device))
    return distances @ weights.to(distances.device, distances.dtype)


class ClipLoss:
    """Loss callable for the guided sampler: predicted_x0 -> per-sample CLIP loss toward target embeddings.

    `model` is an open_clip model; `target_embeds` (K, D) the embeddings to pull toward (a prompt's text embedding,
    a reference image's image embedding, or both), `weights` (K,) their shares of the loss (equal by default);
    `generators` one per image, used for the cutouts. All targets share one CLIP pass over the cutouts.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        target_embeds: torch.Tensor,
        cuts: int,
        generators: Sequence[torch.Generator],
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        weights: Sequence[float] | None = None,
    ):
        if cuts < 1:
            raise ValueError(f"cuts must be at least 1, got {cuts}")
        target_embeds = target_embeds.float().reshape(-1, target_embeds.shape[-1])
        weights = torch.ones(len(target_embeds)) if weights is None else torch.as_tensor(weights, dtype=torch.float32)
        if weights.shape != (len(target_embeds),) or not (weights >= 0).all() or weights.sum() <= 0:
            raise ValueError(f"need one non-negative weight per target embedding, got {weights.tolist()}")
        self.model, self.target_embeds, self.cuts = model, target_embeds, cuts
        self.weights = weights / weights.sum()
        self.generators, self.image_size = list(generators), image_size
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(self, predicted_x0: torch.Tensor) -> torch.Tensor:
        images = (predicted_x0.float() + 1) / 2
        # Straight-through clamp: CLIP sees a valid image, yet saturated pixels keep their gradient.
        images = images + (images.clamp(0, 1) - images).detach()
        cutouts = make_cutouts(images, self.image_size, self.cuts, self.generators)
        mean = cutouts.new_tensor(self.mean).view(1, -1, 1, 1)
        std = cutouts.new_tensor(self.std).view(1, -1, 1, 1)
        embeds = self.model.encode_image(((cutouts - mean) / std).to(image_input_dtype(self.model)))
        distances = weighted_target_distance(embeds, self.target_embeds, self.weights)
        return distances.view(images.shape[0], self.cuts).mean(dim=1)
