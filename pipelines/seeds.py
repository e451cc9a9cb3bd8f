"""Random generators of a batch: image i draws from seed + i, so that any image of a batch reproduces alone."""

from __future__ import annotations

import torch


def seeded_generators(seed: int, count: int, offset: int = 0) -> list[torch.Generator]:
    """One CPU generator per image, seeded seed + i (+ offset): images reproduce across devices and batches."""
    return [torch.Generator("cpu").manual_seed(seed + index + offset) for index in range(count)]
