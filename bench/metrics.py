"""Sample-quality metrics on feature vectors (e.g. L2-normalised CLIP image embeddings), Euclidean distance.

Pure functions on (N, D) numpy arrays or torch tensors; the bench turns images into features.
"""

from __future__ import annotations

import numpy as np
import torch

Features = np.ndarray | torch.Tensor


def as_tensor(features: Features) -> torch.Tensor:
    """(N, D) features as a float64 CPU tensor."""
    return torch.as_tensor(features).detach().double().cpu()


def knn_radii(features: Features, k: int = 3) -> torch.Tensor:
    """(N,) distance from each point to its k-th nearest neighbour in the same set, the point itself excluded."""
    points = as_tensor(features)
    if not 1 <= k < len(points):
        raise ValueError(f"k must be between 1 and {len(points) - 1} for {len(points)} points, got {k}")
    distances = torch.cdist(points, points)
    distances.fill_diagonal_(float("inf"))
    return distances.kthvalue(k, dim=1).values


def manifold_coverage(
    reference: Features, queries: Features, k: int = 3, counted: np.ndarray | torch.Tensor | None = None
) -> float:
    """Share of `queries` inside the union of balls around `reference` points with their k-NN radii (in the whole
    reference set); only the balls of the `counted` reference points (a boolean mask, default all) take part."""
    reference, queries = as_tensor(reference), as_tensor(queries)
    inside = torch.cdist(queries, reference) <= knn_radii(reference, k)[None, :]
    if counted is not None:
        inside &= torch.as_tensor(counted, dtype=torch.bool)[None, :]
    return inside.any(dim=1).double().mean().item()


def precision_recall(real_features: Features, fake_features: Features, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019): (share of fake in the real manifold, share of
    real in the fake manifold)."""
    return manifold_coverage(real_features, fake_features, k), manifold_coverage(fake_features, real_features, k)


def judged_recall(real_features: Features, fake_features: Features, fake_accepted, k: int = 3) -> float:
    """Recall counted only from samples a quality judge accepts (`fake_accepted`, a boolean mask): the share of real
    points inside the k-NN ball of an accepted sample (radii in the whole fake set), so a sample that does not
    look real covers nothing, however near it lands in feature space."""
    return manifold_coverage(fake_features, real_features, k, counted=fake_accepted)


def copy_ratio(fake_features: Features, train_features: Features, threshold: float = 1 / 3) -> float:
    """Share of samples whose nearest training point is closer than `threshold` x the second nearest (Gu et al.
    2023)."""
    fake, train = as_tensor(fake_features), as_tensor(train_features)
    if len(train) < 2:
        raise ValueError("copy_ratio needs at least two training points")
    nearest = torch.cdist(fake, train).topk(2, dim=1, largest=False).values
    return (nearest[:, 0] < threshold * nearest[:, 1]).double().mean().item()


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and population standard deviation of a list of numbers (0 for a single value)."""
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std())
