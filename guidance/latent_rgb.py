"""The cheap latent-to-RGB map: a linear image of the latents, for color guidance and previews of latent models.

A C x 3 matrix and a bias take scaled latents (the diffusion model's own space: VAE latents x `scaling_factor`) at
latent resolution to RGB in about [-1, 1], as stable-diffusion-webui's "Approx cheap" preview
(modules/sd_vae_approx.py) and ComfyUI's `latent_rgb_factors` (comfy/latent_formats.py) do. It costs nothing next to
a VAE decode and is differentiable, so a loss on it guides the latents directly.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import torch

FILE_NAME = "latent_rgb.json"  # beside a checkpoint's model_index.json


@dataclass(frozen=True)
class LatentRGB:
    """RGB = latents . factors + bias, per latent pixel."""

    factors: tuple[tuple[float, float, float], ...]  # one row per latent channel: its R, G, B weights
    bias: tuple[float, float, float] = (0.0, 0.0, 0.0)
    source: str = ""  # where the numbers come from, recorded in the parameters
    recommended: str | None = None  # what color guidance should see on this model by default ("cheap" or "vae")

    def __call__(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) scaled latents -> (B, 3, h, w) RGB in about [-1, 1] (not clamped)."""
        if latents.shape[1] != len(self.factors):
            raise ValueError(f"the latent-to-RGB map takes {len(self.factors)} channels, got {latents.shape[1]}")
        weight = torch.tensor(self.factors, device=latents.device, dtype=latents.dtype)
        bias = torch.tensor(self.bias, device=latents.device, dtype=latents.dtype).view(1, 3, 1, 1)
        return torch.einsum("bchw,cr->brhw", latents, weight) + bias


# Stable Diffusion 1.x (scaled latents, factor 0.18215), from ComfyUI's comfy/latent_formats.py (class SD15,
# GPL-3.0; numbers only), the same map stable-diffusion-webui's "Approx cheap" preview uses.
SD15 = LatentRGB(
    factors=(
        (0.3512, 0.2297, 0.3227),
        (0.3250, 0.4974, 0.2350),
        (-0.2829, 0.1762, 0.2721),
        (-0.2120, -0.2616, -0.7177),
    ),
    source="ComfyUI latent_formats.SD15",
)
SD15_SCALING_FACTOR = 0.18215
# SDXL's VAE (scaled latents, factor 0.13025), from ComfyUI's comfy/latent_formats.py (class SDXL; numbers only).
SDXL = LatentRGB(
    factors=(
        (0.3651, 0.4232, 0.4341),
        (-0.2533, -0.0042, 0.1068),
        (0.1076, 0.1111, -0.0362),
        (-0.3165, -0.2492, -0.2188),
    ),
    bias=(0.1084, -0.0175, -0.0011),
    source="ComfyUI latent_formats.SDXL",
)
# A 4-channel VAE's scaling factor -> its family's published map (SD 2.x shares SD 1.x's VAE and map).
PUBLISHED = {SD15_SCALING_FACTOR: SD15, 0.13025: SDXL}


def load_latent_rgb(folder: str) -> LatentRGB | None:
    """The map shipped in a checkpoint folder (`latent_rgb.json`), with its recommended decoder, or None."""
    path = os.path.join(folder, FILE_NAME)
    if not os.path.isfile(path):
        return None
    with open(path) as handle:
        data = json.load(handle)
    factors = tuple(tuple(float(value) for value in row) for row in data["factors"])
    bias = tuple(float(value) for value in data["bias"])
    return LatentRGB(factors, bias, data.get("source", FILE_NAME), data.get("color_decoder"))


def latent_rgb_for(folder: str | None, vae_config: dict) -> LatentRGB | None:
    """The map for a model: its own file where it ships one, else the published one of its VAE's family (SD 1.x and
    2.x, SDXL: told by the VAE's scaling factor), else None."""
    shipped = load_latent_rgb(folder) if folder and os.path.isdir(folder) else None
    if shipped is not None:
        return shipped
    if vae_config.get("latent_channels") != 4:
        return None
    scaling = vae_config.get("scaling_factor", 0)
    return next((rgb for factor, rgb in PUBLISHED.items() if abs(scaling - factor) < 1e-6), None)


def fit_latent_rgb(latents: torch.Tensor, images: torch.Tensor, source: str) -> tuple[LatentRGB, float]:
    """Least-squares map from scaled latents (N, C, h, w) to images (N, 3, h, w) in [-1, 1] at the same size;
    returns it and its RMS error."""
    inputs = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1]).double()
    targets = images.permute(0, 2, 3, 1).reshape(-1, 3).double()
    design = torch.cat([inputs, torch.ones(len(inputs), 1, dtype=torch.float64)], dim=1)
    solution = torch.linalg.lstsq(design, targets).solution  # (C + 1, 3)
    rmse = (design @ solution - targets).pow(2).mean().sqrt().item()
    factors = tuple(tuple(round(float(value), 6) for value in row) for row in solution[:-1])
    bias = tuple(round(float(value), 6) for value in solution[-1])
    return LatentRGB(factors, bias, source), rmse
