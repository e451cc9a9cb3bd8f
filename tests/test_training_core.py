"""The training recipe's building blocks: ideal-denoiser targets, loss weights, batches and exact resume."""

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.outputs import upscale_for_display
from training.common import diffusion_target, min_snr_weights, posterior_mean, random_batches


def _data(count=6, seed=0):
    return torch.rand(count, 3, 4, 4, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_posterior_mean_matches_brute_force():
    data = _data()
    noisy = torch.randn(3, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    alpha = torch.tensor([0.9, 0.5, 0.1]).view(-1, 1, 1, 1)
    expected = []
    for x, a in zip(noisy, alpha.flatten()):
        log_weights = torch.stack([-(x - a.sqrt() * d).pow(2).sum() / (2 * (1 - a)) for d in data]).double()
        weights = log_weights.softmax(0).float()
        expected.append((weights.view(-1, 1, 1, 1) * data).sum(0))
    torch.testing.assert_close(posterior_mean(noisy, alpha, data), torch.stack(expected), atol=1e-5, rtol=1e-5)


def test_posterior_mean_is_the_image_at_low_noise_and_the_data_mean_at_pure_noise():
    data = _data()
    noise = torch.randn(data.shape, generator=torch.Generator().manual_seed(2))
    quiet = torch.full((len(data), 1, 1, 1), 0.9999)
    noisy = quiet.sqrt() * data + (1 - quiet).sqrt() * noise
    torch.testing.assert_close(posterior_mean(noisy, quiet, data), data)
    silent = torch.full((2, 1, 1, 1), 1e-9)
    torch.testing.assert_close(
        posterior_mean(noise[:2], silent, data), data.mean(0).expand(2, -1, -1, -1), atol=1e-4, rtol=0
    )


def test_targets_and_min_snr_weights():
    clean, noise = _data(2), _data(2, seed=3)
    alpha = torch.tensor([0.8, 0.2]).view(-1, 1, 1, 1)
    assert torch.equal(diffusion_target(clean, noise, alpha, "epsilon"), noise)
    v = diffusion_target(clean, noise, alpha, "v_prediction")
    # x0 = sqrt(a) x_t - sqrt(1 - a) v, the identity the samplers use.
    noisy = alpha.sqrt() * clean + (1 - alpha).sqrt() * noise
    torch.testing.assert_close(alpha.sqrt() * noisy - (1 - alpha).sqrt() * v, clean)
    alphas = torch.tensor([0.99, 0.5, 0.01])  # SNR 99, 1, ~0.0101
    steps = torch.arange(3)
    torch.testing.assert_close(min_snr_weights(alphas, steps, 5.0, "epsilon"), torch.tensor([5 / 99, 1.0, 1.0]))
    snr = alphas / (1 - alphas)
    torch.testing.assert_close(min_snr_weights(alphas, steps, 5.0, "v_prediction"), snr.clamp(max=5) / (snr + 1))
    assert torch.equal(min_snr_weights(alphas, steps, 0.0, "epsilon"), torch.ones(3))


def test_batches_are_epoch_permutations_and_resume_where_they_stopped():
    batches = random_batches(10, 3, seed=4)
    first = [next(batches) for _ in range(6)]
    epoch = torch.cat(first[:3])
    assert len(set(epoch.tolist())) == 9  # one epoch: 3 batches of distinct images (the remainder is dropped)
    resumed = random_batches(10, 3, seed=4, start_step=4)
    assert all(torch.equal(a, b) for a, b in zip(first[4:], [next(resumed) for _ in range(2)]))


def test_upscale_for_display_uses_integer_factors():
    small = Image.new("RGB", (32, 32), "red")
    assert upscale_for_display(small).size == (64, 64)
    assert upscale_for_display(Image.new("RGB", (48, 24))).size == (144, 72)
    big = Image.new("RGB", (64, 64))
    assert upscale_for_display(big) is big


@pytest.mark.parametrize("script", ["ddpm", "clip"])
def test_resumed_training_equals_uninterrupted_training(tmp_path, script):
    if script == "ddpm":
        from training.train_ddpm import DDPMConfig as Config
        from training.train_ddpm import train

        toy = dict(batch_size=4, sample_count=2, eval_count=2, block_out_channels=(32, 32, 32))
    else:
        from training.train_clip import ClipConfig as Config
        from training.train_clip import train

        toy = dict(batch_size=4, vision_width=32, text_width=32, vision_layers=1, text_layers=1)
    rng = np.random.default_rng(0)
    data = tmp_path / "data.npz"
    np.savez(data, images=rng.integers(0, 256, (8, 64, 64, 3), dtype=np.uint8), names=np.array(list("abcdefgh")))
    straight = Config(data=str(data), out=str(tmp_path / "a"), checkpoints=str(tmp_path / "ca"), steps=4, **toy)
    train(straight)
    first = Config(data=str(data), out=str(tmp_path / "b"), checkpoints=str(tmp_path / "cb"), steps=2, **toy)
    train(first)
    train(
        Config(data=str(data), out=str(tmp_path / "b"), checkpoints=str(tmp_path / "cb"), steps=4, resume=True, **toy)
    )
    a = torch.load(tmp_path / "ca" / "last.pt", weights_only=False)
    b = torch.load(tmp_path / "cb" / "last.pt", weights_only=False)
    assert a["step"] == b["step"] == 4
    for name, value in a["model"].items():
        assert torch.equal(value, b["model"][name]), name


def test_scoring_clip_junk_is_blends_never_one_emoji():
    from training.train_clip import junk_images

    images = -torch.ones(8, 3, 16, 16)
    for index in range(8):  # image i: white (+1) in column block i only
        images[index, :, :, 2 * index : 2 * index + 2] = 1.0
    junk = junk_images(images, 64, torch.Generator().manual_seed(0))
    assert junk.shape == (64, 3, 16, 16) and junk.min() >= -1 and junk.max() <= 1
    # Each blend mixes distinct images, none weighing more than 3/4: every white block is at most 3/4 lit.
    lit = (junk.mean(dim=(1, 2)).reshape(64, 8, 2).mean(dim=2) + 1) / 2
    assert lit.max() < 0.85 and (lit > 0.05).sum(dim=1).min() >= 2, lit.max()


def test_scoring_clip_low_resolution_junk_keeps_colour_and_loses_detail():
    from training.train_clip import low_resolution_junk

    stripes = -torch.ones(16, 3, 32, 32)
    stripes[..., ::2] = 1.0  # one-pixel stripes: mean 0, all detail
    stripes[:, 0] = 0.5  # red channel flat: pure colour
    blobs = low_resolution_junk(stripes, 16, torch.Generator().manual_seed(0))
    assert blobs.shape == (16, 3, 32, 32) and blobs.min() >= -1 and blobs.max() <= 1
    # Shrunk to 4 or 8 px, the stripes average out to flat grey; the flat colour survives exactly.
    assert blobs[:, 1:].abs().max() < 1e-5 and torch.allclose(blobs[:, 0], torch.full_like(blobs[:, 0], 0.5))


def test_separation_loss_is_zero_only_when_junk_is_on_the_far_side():
    from training.train_clip import separation_loss

    real = torch.nn.functional.normalize(torch.tensor([[1.0, 0.2, 0.0], [1.0, -0.2, 0.0]]), dim=1)
    assert separation_loss(real, -real).item() == 0.0  # antipodal junk: nothing to push
    assert separation_loss(real, torch.tensor([[0.0, 0.0, 1.0]])).item() == 0.0  # orthogonal: none either
    near = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0, 0.1]]), dim=1)  # junk amid the emoji
    assert separation_loss(real, near).item() == pytest.approx((real @ near.T).mean().item())


def test_clip_augment_low_resolutions_choose_the_resampled_sizes():
    from training.train_clip import augment

    checker = torch.zeros(64, 3, 32, 32)
    checker[..., ::2, :] = 1.0
    checker[..., 1::2, :] = -1.0
    sharp = augment(checker.clone(), torch.Generator().manual_seed(0), low_resolutions=())
    halved = augment(checker.clone(), torch.Generator().manual_seed(0), low_resolutions=(2,))
    # Without low resolutions every stripe survives the (mild) scale and shift; with /2, a third are averaged away.
    contrast = lambda batch: (batch[..., 8:24, 8:24].std(dim=(1, 2, 3)) > 0.5).float().mean().item()  # noqa: E731
    assert contrast(sharp) > contrast(halved) + 0.15, (contrast(sharp), contrast(halved))
