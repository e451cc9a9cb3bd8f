"""CLIP guidance pieces: batched cutouts, spherical distance in float32, per-sample losses."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from guidance.clip import ClipLoss, make_cutouts, spherical_distance
from pipelines.unconditional import seeded_generators
from tests.tiny_models import tiny_clip


def test_cutouts_are_one_batch_with_the_whole_image_first():
    images = torch.rand(3, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    cutouts = make_cutouts(images, 32, 5, seeded_generators(0, 3))
    assert cutouts.shape == (15, 3, 32, 32)
    overview = F.interpolate(F.avg_pool2d(images, 1), size=32, mode="bilinear", align_corners=False)
    # Cutout 0 of each image is the identity crop: the whole image resampled.
    torch.testing.assert_close(cutouts[::5], overview, atol=0.05, rtol=0)
    assert not torch.allclose(cutouts[1], cutouts[2])


def test_image_gets_the_same_cutouts_in_any_batch():
    images = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    batch = make_cutouts(images, 32, 4, seeded_generators(10, 4))
    alone = make_cutouts(images[2:3], 32, 4, seeded_generators(12, 1))
    torch.testing.assert_close(batch[8:12], alone)


def test_cutouts_need_one_generator_per_image():
    with pytest.raises(ValueError, match="one generator per image"):
        make_cutouts(torch.zeros(2, 3, 8, 8), 4, 2, seeded_generators(0, 1))


def test_spherical_distance_values():
    a = torch.tensor([[1.0, 0.0]])
    assert spherical_distance(a, a).item() == pytest.approx(0.0, abs=1e-6)
    right_angle = spherical_distance(a, torch.tensor([[0.0, 3.0]])).item()
    assert right_angle == pytest.approx(2 * (math.pi / 4) ** 2, rel=1e-5)
    opposite = spherical_distance(a, -a)
    assert torch.isfinite(opposite).all() and opposite.dtype == torch.float32


def test_spherical_distance_gradient_is_finite_at_opposite_points():
    image = torch.tensor([[1.0, 0.0]], requires_grad=True)
    spherical_distance(image, torch.tensor([[-1.0, 0.0]])).sum().backward()
    assert torch.isfinite(image.grad).all()


def test_clip_loss_is_per_sample_and_batch_independent():
    model = tiny_clip()
    text = torch.randn(1, 32, generator=torch.Generator().manual_seed(3))
    x0 = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(4)) * 2 - 1
    batch = ClipLoss(model, text, 4, seeded_generators(5, 3), 64, (0.5,) * 3, (0.5,) * 3)(x0)
    single = ClipLoss(model, text, 4, seeded_generators(6, 1), 64, (0.5,) * 3, (0.5,) * 3)(x0[1:2])
    assert batch.shape == (3,) and batch.dtype == torch.float32
    torch.testing.assert_close(batch[1:2], single, atol=1e-5, rtol=0)


def test_clip_loss_calls_the_model_once_for_all_cutouts():
    model = tiny_clip()
    calls = []
    original = model.encode_image
    model.encode_image = lambda images: calls.append(images.shape[0]) or original(images)
    loss = ClipLoss(model, torch.randn(1, 32), 6, seeded_generators(0, 2), 64, (0.5,) * 3, (0.5,) * 3)
    loss(torch.zeros(2, 3, 32, 32))
    assert calls == [12]


def test_saturated_pixels_keep_their_gradient():
    model = tiny_clip()
    loss = ClipLoss(model, torch.randn(1, 32), 2, seeded_generators(0, 1), 64, (0.5,) * 3, (0.5,) * 3)
    x0 = torch.full((1, 3, 32, 32), 5.0, requires_grad=True)  # far outside [-1, 1]
    loss(x0).sum().backward()
    assert x0.grad.abs().sum() > 0


def _loss(model, targets, weights=None, images=2):
    return ClipLoss(model, targets, 3, seeded_generators(7, images), 64, (0.5,) * 3, (0.5,) * 3, weights)


def test_clip_loss_toward_two_targets_is_their_strength_weighted_mean():
    model = tiny_clip()
    text, picture = torch.randn(2, 1, 32, generator=torch.Generator().manual_seed(8))
    x0 = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(9)) * 2 - 1
    both = _loss(model, torch.cat([text, picture]), [3.0, 1.0])(x0)
    expected = 0.75 * _loss(model, text)(x0) + 0.25 * _loss(model, picture)(x0)
    torch.testing.assert_close(both, expected, atol=1e-5, rtol=0)
    # One CLIP pass serves both targets, and a target of weight 0 is no target at all.
    torch.testing.assert_close(_loss(model, torch.cat([text, picture]), [2.0, 0.0])(x0), _loss(model, text)(x0))


def test_clip_loss_refuses_weights_that_do_not_match_its_targets():
    for weights in ([1.0], [1.0, -1.0], [0.0, 0.0]):
        with pytest.raises(ValueError, match="one non-negative weight per target"):
            _loss(tiny_clip(), torch.randn(2, 32), weights)


def test_a_reference_picture_is_embedded_as_clip_sees_its_centred_square():
    from PIL import Image

    from pipelines.clip import ClipBundle

    bundle = ClipBundle(tiny_clip(), None, 64, (0.5,) * 3, (0.5,) * 3, "tiny")
    pixels = np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    wide = Image.fromarray(pixels)  # 96x64: its centred square is columns 16-79
    square = Image.fromarray(np.ascontiguousarray(pixels[:, 16:80]))
    embedding = bundle.encode_image(wide)
    assert embedding.shape == (1, 32) and embedding.dtype == torch.float32
    torch.testing.assert_close(embedding, bundle.encode_image(square))
    normalised = torch.from_numpy(pixels[:, 16:80] / 255).permute(2, 0, 1)[None].float() * 2 - 1  # mean, std 0.5
    expected = bundle.model.encode_image(normalised)
    torch.testing.assert_close(embedding, expected, atol=1e-5, rtol=0)
    assert not torch.allclose(embedding, bundle.encode_image(Image.fromarray(pixels[:, :64].copy())))


def test_a_clip_in_open_clips_mixed_low_precision_takes_its_tower_dtype():
    """open_clip's "fp16"/"bf16" precision leaves the class embedding and norms in float32: the loss and the
    reference encoder must feed the image tower its convolution's dtype (on CUDA fp16 they once fed float32)."""
    from open_clip.model import convert_weights_to_lp
    from PIL import Image

    from guidance.clip import image_input_dtype
    from pipelines.clip import ClipBundle

    model = tiny_clip()
    convert_weights_to_lp(model, torch.bfloat16)  # what open_clip's precision="bf16" does; bf16 runs on any CPU
    assert next(model.parameters()).dtype == torch.float32 and image_input_dtype(model) == torch.bfloat16
    x0 = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(4), requires_grad=True)
    loss = ClipLoss(model, torch.randn(1, 32), 2, seeded_generators(5, 2), 64, (0.5,) * 3, (0.5,) * 3)(x0)
    assert loss.dtype == torch.float32 and torch.isfinite(torch.autograd.grad(loss.sum(), x0)[0]).all()
    bundle = ClipBundle(model, None, 64, (0.5,) * 3, (0.5,) * 3, "tiny")
    assert torch.isfinite(bundle.encode_image(Image.new("RGB", (64, 64), (200, 30, 30)))).all()
