"""Random generators of a batch: image i draws from seed + i, so that any image of a batch reproduces alone. An
image run as several particles (guidance.particles) has one row per particle: particle 0 draws from the image's own
seed (one particle is the plain run), particle j > 0 from a seed mixed from the image's seed and j.

torch's CPU generator keeps only the low 32 bits of a seed (seeds s and s + 2**32 draw the same numbers), so a
stream of its own takes a mixed 32-bit seed (`stream_seed`), not an offset."""

from __future__ import annotations

import torch

MASK64 = 2**64 - 1
RESAMPLING_STREAM = 1000  # an image's resampling draws (streams below it are particle indices)


def stream_seed(seed: int, stream: int) -> int:
    """A 32-bit seed for stream `stream` > 0 of the image of seed `seed` (splitmix64's finaliser over both)."""
    mixed = (seed * 0x9E3779B97F4A7C15 + stream * 0xBF58476D1CE4E5B9) & MASK64
    mixed = ((mixed ^ (mixed >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    mixed = ((mixed ^ (mixed >> 27)) * 0x94D049BB133111EB) & MASK64
    return (mixed ^ (mixed >> 31)) & 0xFFFFFFFF


def row_seeds(seed: int, count: int, particles: int = 1) -> list[int]:
    """The seed of each row of `count` images run as `particles` particles each, image-major."""
    return [
        seed + index if particle == 0 else stream_seed(seed + index, particle)
        for index in range(count)
        for particle in range(particles)
    ]


def seeded_generators(seed: int, count: int, offset: int = 0, particles: int = 1) -> list[torch.Generator]:
    """One CPU generator per row (image, or particle of an image), seeded as `row_seeds` says (+ offset): images
    reproduce across devices and batches."""
    return [torch.Generator("cpu").manual_seed(row + offset) for row in row_seeds(seed, count, particles)]


def stream_generators(seed: int, count: int, stream: int) -> list[torch.Generator]:
    """One CPU generator per image of seed seed + i, for stream `stream` of its own."""
    return [torch.Generator("cpu").manual_seed(stream_seed(seed + index, stream)) for index in range(count)]
