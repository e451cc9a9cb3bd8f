"""Particles with resampling (Feynman-Kac steering, Singhal et al. 2025): each requested image runs as `count`
particles, rows `i * count + j` of the batch (image-major). Every few steps each image's particles are scored by the
guidance terms' own losses and drawn again, with replacement, in proportion to exp(sharpness * score), so that the
chains heading where guidance points multiply and the others die; at the end each image keeps its best particle.

A score is scale-free: each term's loss is standardised within the image's particles (a color loss and a CLIP loss
have different units), and the terms are mixed by their strengths. Every draw comes from the image's own generator,
so a seed reproduces its image whatever the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

RESAMPLE_EVERY = 5  # steps between resamplings
SHARPNESS = 2.0  # how strongly a resampling favours a particle one standard deviation better than its siblings


@dataclass(frozen=True)
class Particles:
    """How an image's particles are run: `count` per image, resampled every `every` steps, by draws from
    `generators` (one per image)."""

    count: int
    generators: Sequence[torch.Generator]
    every: int = RESAMPLE_EVERY
    sharpness: float = SHARPNESS

    def __post_init__(self):
        if self.count < 1 or self.every < 1:
            raise ValueError(f"particles need a count and a period of at least 1, got {self.count}, {self.every}")


def scores(losses: Sequence[torch.Tensor], strengths: Sequence[float], count: int) -> torch.Tensor:
    """Each row's score (higher is better): minus each term's per-row loss, standardised among the rows of the same
    image (`count` consecutive rows), averaged with the terms' `strengths` as weights. A term whose loss does not
    vary among an image's particles adds 0."""
    total = sum(strengths)
    score = torch.zeros(losses[0].shape[0], dtype=torch.float64, device=losses[0].device)
    for loss, strength in zip(losses, strengths):
        groups = -loss.detach().to(torch.float64).view(-1, count)
        spread = groups.std(dim=1, keepdim=True, unbiased=False)
        standard = torch.where(spread > 0, (groups - groups.mean(dim=1, keepdim=True)) / spread.clamp_min(1e-12), 0)
        score += standard.flatten() * (strength / total)
    return torch.nan_to_num(score, nan=0.0)


def resample(score: torch.Tensor, particles: Particles) -> torch.Tensor:
    """The rows the batch continues from: for each image, `count` draws with replacement among its own rows, with
    probabilities softmax(sharpness * score), from the image's generator; (images * count,) row indices."""
    count = particles.count
    weights = torch.softmax(particles.sharpness * score.view(-1, count).cpu(), dim=1)
    rows = [
        index * count + torch.multinomial(weights[index], count, replacement=True, generator=generator)
        for index, generator in enumerate(particles.generators)
    ]
    return torch.cat(rows).to(score.device)


def best(score: torch.Tensor, count: int) -> torch.Tensor:
    """The row of each image's highest-scoring particle (the first of equals): (images,)."""
    groups = score.view(-1, count)
    return torch.arange(groups.shape[0], device=score.device) * count + groups.argmax(dim=1)


def reindex_scheduler(scheduler, rows: torch.Tensor, shape: torch.Size) -> None:
    """Make a scheduler's per-sample state follow a resampling: every tensor of the sample's `shape` it holds (a
    multistep scheduler's past model outputs, UniPC's last sample), alone or in a list, is indexed by `rows`."""

    def follows(value) -> bool:
        return isinstance(value, torch.Tensor) and value.shape == shape

    for name, value in list(vars(scheduler).items()):
        if follows(value):
            setattr(scheduler, name, value[rows.to(value.device)])
        elif isinstance(value, list) and any(map(follows, value)):
            setattr(scheduler, name, [item[rows.to(item.device)] if follows(item) else item for item in value])
