"""The open_clip model used for CLIP guidance, loaded once per process."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageOps

from guidance import ClipLoss
from guidance.clip import image_input_dtype
from pipelines.cache import MODELS
from pipelines.config import clip_model
from pipelines.device import default_device, model_dtype
from pipelines.seeds import seeded_generators

MAX_CUTS = 64  # cutouts per image and step
DEFAULT_CUTS = 4
CUTOUT_SEED_OFFSET = 2**40  # cutouts draw from generators of their own: guided and unguided runs share the noise


@dataclass
class ClipBundle:
    """An open_clip model with what guidance needs to feed it."""

    model: torch.nn.Module
    tokenizer: object
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    name: str
    # Trained on noisy samples x_t (its open_clip_config.json says "noise_aware": true): pixel models' CLIP guidance
    # then reads x_t, where its gradient points to the named image, rather than the predicted x0.
    noise_aware: bool = False

    @torch.no_grad()
    def encode_text(self, prompt: str) -> torch.Tensor:
        """The (1, D) float32 text embedding of `prompt`."""
        device = next(self.model.parameters()).device
        tokens = self.tokenizer([prompt]).to(device)
        return self.model.encode_text(tokens).float()

    @torch.no_grad()
    def encode_image(self, image: Image.Image) -> torch.Tensor:
        """The (1, D) float32 image embedding of an RGB picture, seen as CLIP's own preprocessing shows it: the
        largest centred square, resized to the model's input size."""
        square = ImageOps.fit(image, (self.image_size, self.image_size), Image.Resampling.BICUBIC)
        pixels = torch.from_numpy(np.asarray(square, dtype=np.float32) / 255).permute(2, 0, 1)[None]
        mean, std = torch.tensor(self.mean).view(1, 3, 1, 1), torch.tensor(self.std).view(1, 3, 1, 1)
        device = next(self.model.parameters()).device
        pixels = ((pixels - mean) / std).to(device=device, dtype=image_input_dtype(self.model))
        return self.model.encode_image(pixels).float()


def load_clip(name: str, pretrained: str | None, device: torch.device) -> ClipBundle:
    """Create an open_clip model (built-in name + tag, `local-dir:` or `hf-hub:`) on `device`, frozen."""
    import open_clip

    precision = "fp16" if model_dtype(device) == torch.float16 else "fp32"
    model, _, _ = open_clip.create_model_and_transforms(name, pretrained=pretrained, device=device, precision=precision)
    model.eval().requires_grad_(False)
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    return ClipBundle(
        model=model,
        tokenizer=open_clip.get_tokenizer(name),
        image_size=int(size),
        mean=tuple(model.visual.image_mean),
        std=tuple(model.visual.image_std),
        name=name if pretrained is None else f"{name}/{pretrained}",
        noise_aware=declares_noise_aware(name),
    )


def declares_noise_aware(name: str) -> bool:
    """Whether a `local-dir:` CLIP's open_clip_config.json declares it trained on noisy samples."""
    if not name.startswith("local-dir:"):
        return False
    try:
        with open(os.path.join(name.removeprefix("local-dir:"), "open_clip_config.json")) as handle:
            return json.load(handle).get("noise_aware") is True
    except (OSError, ValueError, AttributeError):
        return False


def get_clip(model: str | None = None) -> ClipBundle:
    """The CLIP model that guides `model` (see `clip_model`), loaded on first use and cached."""
    name, pretrained = clip_model(model)
    device = default_device()
    return MODELS.get(("clip", name, pretrained, str(device)), lambda: load_clip(name, pretrained, device))


def clip_targets(
    clip: ClipBundle, prompt: str, prompt_scale: float, image: Image.Image | None, image_scale: float
) -> tuple[torch.Tensor, list[float], float]:
    """(target embeddings (K, D), their weights, the CLIP term's strength) for guidance toward a text prompt and/or
    a reference picture, each with its own strength: one term moves x0 by the sum of the strengths, in the
    direction of the two distances weighted by their strengths (one CLIP pass over the cutouts serves both)."""
    targets = [(clip.encode_text(prompt), prompt_scale)] if prompt_scale > 0 else []
    targets += [(clip.encode_image(image), image_scale)] if image_scale > 0 else []
    embeds, weights = zip(*targets)
    return torch.cat(embeds), list(weights), float(sum(weights))


def clip_loss(
    clip: ClipBundle,
    targets: torch.Tensor,
    weights: list[float],
    cuts: int,
    seed: int,
    batch_size: int,
    particles: int = 1,
) -> ClipLoss:
    """The CLIP loss toward `targets` for a batch whose image i has seed `seed` + i, run as `particles` rows each
    (its cutouts drawn from a generator of its own, so an image gets the same cutouts in any batch)."""
    generators = seeded_generators(seed, batch_size, CUTOUT_SEED_OFFSET, particles)
    return ClipLoss(clip.model, targets, cuts, generators, clip.image_size, clip.mean, clip.std, weights)
