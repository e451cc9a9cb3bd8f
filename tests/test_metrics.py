"""Precision/recall and copy ratio on hand-built point sets whose answers are known exactly."""

import numpy as np
import pytest
import torch

from bench.metrics import copy_ratio, judged_recall, knn_radii, mean_std, precision_recall

DIM = 8


def mode(center: int, shift: float = 0.0) -> np.ndarray:
    """A 3x3 grid of points (spacing 1) around 100 * e_center, moved by `shift` along the last axis."""
    points = np.zeros((9, DIM))
    points[:, center] = 100.0
    points[:, 4] = np.repeat([-1.0, 0.0, 1.0], 3)
    points[:, 5] = np.tile([-1.0, 0.0, 1.0], 3)
    points[:, -1] = shift
    return points


REAL = np.concatenate([mode(center) for center in range(4)])  # four well-separated modes, 36 points


def test_knn_radius_excludes_the_point_itself():
    points = np.array([[0.0], [1.0], [3.0], [7.0]])
    assert knn_radii(points, k=1).tolist() == [1.0, 1.0, 2.0, 4.0]
    assert knn_radii(points, k=2).tolist() == [3.0, 2.0, 3.0, 6.0]
    with pytest.raises(ValueError):
        knn_radii(points, k=4)


def test_identical_sets_have_full_precision_and_recall():
    assert precision_recall(REAL, REAL.copy()) == (1.0, 1.0)
    assert precision_recall(torch.from_numpy(REAL), torch.from_numpy(REAL)) == (1.0, 1.0)


def test_far_apart_sets_have_zero_precision_and_recall():
    assert precision_recall(REAL, REAL + 1000.0) == (0.0, 0.0)


def test_fake_set_covering_half_the_modes_is_precise_with_half_recall():
    # Equal size: every point of modes 0 and 1 twice, nudged 0.25 up and down off the real grid.
    fake = np.concatenate([mode(center, shift) for center in (0, 1) for shift in (0.25, -0.25)])
    assert len(fake) == len(REAL)
    precision, recall = precision_recall(REAL, fake, k=3)
    assert precision == 1.0 and recall == 0.5


def test_judged_recall_counts_only_accepted_samples():
    fake = np.concatenate([mode(center, 0.25) for center in range(4)])  # covers all four modes
    everyone = np.ones(len(fake), dtype=bool)
    assert judged_recall(REAL, fake, everyone) == precision_recall(REAL, fake)[1] == 1.0
    first_two_modes = np.arange(len(fake)) < 18  # the judge rejects the samples of modes 2 and 3
    assert judged_recall(REAL, fake, first_two_modes) == 0.5
    assert judged_recall(REAL, fake, np.zeros(len(fake), dtype=bool)) == 0.0


def test_copy_ratio_counts_exact_copies_and_not_equidistant_points():
    train = np.eye(5)
    assert copy_ratio(train[[0, 3, 3]], train) == 1.0
    equidistant = np.stack([np.zeros(5), np.full(5, -1.0), np.full(5, 0.2)])  # same distance to every e_i
    assert copy_ratio(equidistant, train) == 0.0
    near_copy = train[[1]] + 0.01
    assert copy_ratio(np.concatenate([near_copy, equidistant[:1]]), train) == 0.5


def test_mean_std():
    assert mean_std([1.0, 3.0]) == (2.0, 1.0) and mean_std([0.5]) == (0.5, 0.0)
