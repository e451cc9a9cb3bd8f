"""Data-set guidance: the exact noisy classifier over a model's reference set (guidance.reference,
pipelines.reference) and how the pixel tabs choose it (clip_method)."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from guidance import GuidanceTerm, guided_sample
from guidance.reference import ReferencePosterior, log_likelihoods, target_log_prior
from tests.tiny_models import tiny_scheduler, tiny_unet


def _references(count: int = 5, seed: int = 0) -> torch.Tensor:
    return torch.rand(count, 3, 8, 8, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_the_loss_is_bayes_rule_on_gaussian_likelihoods():
    """-log p(target | x_t) = -log sum_j q_j N(x_t; sqrt(a) x_j, (1 - a) I) / sum_j N(x_t; sqrt(a) x_j, (1 - a) I),
    computed here from the densities themselves."""
    references = _references()
    noisy = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    prior = torch.log_softmax(torch.tensor([2.0, 0.0, -1.0, 0.5, 0.0]), dim=0)
    alpha = 0.3
    loss = ReferencePosterior(references, prior)(noisy, torch.tensor(alpha))
    for row in range(3):
        density = torch.distributions.Normal(math.sqrt(alpha) * references.double(), math.sqrt(1 - alpha))
        log_p = density.log_prob(noisy[row].double()).flatten(1).sum(1)
        expected = torch.logsumexp(log_p, 0) - torch.logsumexp(log_p + prior.double(), 0)
        assert loss[row].item() == pytest.approx(expected.item(), rel=1e-4, abs=1e-4)


def test_the_gradient_points_from_the_posterior_mean_to_the_targets():
    """d/dx_t of -log p(target | x_t) = -sqrt(a) / (1 - a) (E_target[x_j | x_t] - E[x_j | x_t]): classifier
    guidance's step moves x_t from the unconditional posterior mean toward the target's."""
    references = _references()
    noisy = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2)).requires_grad_(True)
    prior = torch.log_softmax(torch.tensor([0.0, 3.0, 0.0, 0.0, 1.0]), dim=0)
    alpha = torch.tensor(0.5)
    ReferencePosterior(references, prior)(noisy, alpha).sum().backward()
    with torch.no_grad():
        weights = torch.softmax(log_likelihoods(noisy, alpha, references), dim=1)
        target = torch.softmax(log_likelihoods(noisy, alpha, references) + prior, dim=1)
        flat = references.flatten(1)
        expected = -alpha.sqrt() / (1 - alpha) * (target @ flat - weights @ flat)
    torch.testing.assert_close(noisy.grad.flatten(1), expected, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("scheduler_name", ["DDPM", "Euler"])
@pytest.mark.parametrize("gradient_method", ["x0", "unet"])
def test_the_classifier_rule_moves_x0_from_the_posterior_mean_to_the_targets(scheduler_name, gradient_method):
    """The "classifier" step rule at scale s moves the predicted x0 by s (E_target[x_j | x_t] - E[x_j | x_t]) on
    the first step (Tweedie's formula: classifier guidance's shift of the noise prediction, seen on x0), whichever
    way the gradient is taken and whatever scaling the scheduler gives its samples (Euler's x_t sqrt(1 + sigma^2))."""
    from diffusers import EulerDiscreteScheduler

    from guidance.sampler import step_alphas

    def scheduler():  # the denoiser predicts the clean sample: a grey image, so no pixel of x0 is clamped
        plain = tiny_scheduler("sample")
        return plain if scheduler_name == "DDPM" else EulerDiscreteScheduler.from_config(plain.config)

    class GreyDenoiser(torch.nn.Module):
        dtype = torch.float32

        def forward(self, sample: torch.Tensor, timestep) -> SimpleNamespace:
            return SimpleNamespace(sample=sample * 0)

    references = _references() * 0.5
    prior = torch.log_softmax(torch.tensor([0.0, 3.0, 0.0, 0.0, 1.0]), dim=0)
    unet = GreyDenoiser()
    noise = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(4))

    def first_x0(terms) -> torch.Tensor:
        seen = []
        guided_sample(
            unet, scheduler(), noise.clone(), 4, terms, gradient_method=gradient_method,
            callback=lambda i, n, x0: seen.append(x0),
        )  # fmt: skip
        return seen[0]

    plain = first_x0([])
    term = GuidanceTerm("clip", ReferencePosterior(references, prior), 0.7, noisy=True, rule="classifier")
    moved = first_x0([term]) - plain
    timing = scheduler()
    timing.set_timesteps(4)
    alpha = step_alphas(timing, timing.timesteps)[0].float()
    x_t = noise * timing.init_noise_sigma * timing.scale_model_input(torch.ones(()), timing.timesteps[0])
    with torch.no_grad():
        likelihoods = log_likelihoods(x_t, alpha, references)
        flat = references.flatten(1)
        shift = torch.softmax(likelihoods + prior, dim=1) @ flat - torch.softmax(likelihoods, dim=1) @ flat
    assert plain.abs().max() == 0 and shift.abs().max() > 0.1
    # float32 gradients times (1 - a) / sqrt(a), about 157 at the first step: a tolerance of 0.5% of the largest move
    torch.testing.assert_close(moved.flatten(1), 0.7 * shift, rtol=1e-2, atol=2e-3)


def test_the_classifier_rule_needs_a_noisy_term():
    term = GuidanceTerm("clip", lambda x0: x0.flatten(1).sum(1), 1.0, rule="classifier")
    with pytest.raises(ValueError, match="classifier"):
        guided_sample(tiny_unet(seed=0, sample_size=8), tiny_scheduler(), torch.zeros(1, 3, 8, 8), 2, [term])


def test_a_target_on_one_reference_has_no_loss_once_the_sample_is_that_reference():
    references = _references()
    prior = torch.log_softmax(torch.tensor([0.0, 0.0, 50.0, 0.0, 0.0]), dim=0)
    loss = ReferencePosterior(references, prior)(references[2:3], torch.tensor(1.0))
    assert loss.item() == pytest.approx(0.0, abs=1e-4)
    assert torch.isfinite(ReferencePosterior(references, prior)(references, torch.tensor(1.0))).all()


def test_the_targets_prior_mixes_text_and_picture_by_strength():
    similarities = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    prior = target_log_prior(similarities, [3.0, 1.0], temperature=10.0)
    torch.testing.assert_close(prior.exp().sum(), torch.tensor(1.0))
    assert prior.argmax().item() == 0 and prior[2] > prior[1]
    assert target_log_prior(similarities, [1.0, 3.0], 10.0).argmax().item() == 2


@pytest.mark.parametrize(
    "seed, rule, scale", [(0, "rms", 10.0), (1, "rms", 10.0), (0, "classifier", 1.0), (1, "classifier", 1.0)]
)
def test_data_set_guidance_in_the_loop_lands_on_the_named_reference(seed, rule, scale):
    """The guided loop on a tiny random UNet, pulled by the exact classifier toward one reference of 6, ends nearest
    that reference (in pixels), whichever is named, and nearer it than the unguided sample of the same seed: by the
    unit-RMS step and by classifier guidance's own step at scale 1 (the exact conditional)."""
    references = _references(6, seed=10 + seed) * 0.8
    size = references.shape[-1]
    unet = tiny_unet(seed=seed, sample_size=size)

    def distances(target: int | None) -> torch.Tensor:
        terms = []
        if target is not None:
            prior = torch.log_softmax(torch.nn.functional.one_hot(torch.tensor(target), 6).float() * 40, dim=0)
            terms = [GuidanceTerm("clip", ReferencePosterior(references, prior), scale, noisy=True, rule=rule)]
        generator = torch.Generator().manual_seed(seed)
        noise = torch.randn(1, 3, size, size, generator=generator)
        image = guided_sample(unet, tiny_scheduler(), noise, 20, terms, generator=generator, eta=1.0)[0]
        return (image.flatten()[None] - references.flatten(1)).pow(2).mean(1)

    plain = distances(None)
    for target in (1, 3, 4):
        guided = distances(target)
        assert guided.argmin().item() == target, (target, guided)
        # The classifier rule moves x0 by the posterior-mean shift, small once the sample is already nearest.
        assert guided[target] < (0.9 if rule == "rms" else 1.0) * plain[target], (target, guided, plain)


NAMES = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"]


@pytest.fixture()
def referenced(configured, tmp_path, monkeypatch):
    """The tiny DDPM copied with a reference set of 6 named images, configured as the first pixel model."""
    import shutil

    from pipelines.reference import REFERENCE_FILE, save_reference_set

    folder = str(tmp_path / "tiny-ddpm-referenced")
    shutil.copytree(configured["unet"], folder)
    save_reference_set(
        f"{folder}/{REFERENCE_FILE}", _references(6, seed=3).repeat_interleave(4, -1).repeat_interleave(4, -2), NAMES
    )
    monkeypatch.setenv("UNCOND_MODELS", f"{folder},{configured['unet']}")
    return folder


def _clip_request(model: str, **keywords):
    from pipelines import unconditional as uncond

    values = dict(model=model, steps=10, seed=5, prompt="delta", clip_scale=10.0, recurrence=1)
    return uncond.Request(**(values | keywords))


def test_auto_steers_by_the_data_set_where_the_model_ships_one(referenced, configured):
    from pipelines import unconditional as uncond
    from pipelines.infotext import infotext, parse_infotext, request_values
    from pipelines.reference import get_reference_set

    request = uncond.validate(_clip_request(referenced))
    assert request.clip_method == "data set" and request.work().cutout_steps == 0
    result = uncond.generate(_clip_request(referenced))
    assert result.info["clip_method"] == "data set" and "cuts" not in result.info
    text = infotext(result.image_parameters[0], result.images[0].size)
    assert "CLIP method: data set" in text and request_values(parse_infotext(text))[1]["clip_method"] == "data set"
    # The tiny CLIP reads the typed name as its own reference: the image ends nearest "delta".
    pixels = torch.from_numpy(np.asarray(result.images[0].resize((32, 32)))).permute(2, 0, 1).float() / 127.5 - 1
    references = get_reference_set(referenced).images
    assert (pixels.flatten()[None] - references.flatten(1)).pow(2).mean(1).argmin().item() == NAMES.index("delta")
    # Elsewhere "auto" is cutouts; asking for the data set there runs cutouts and says so.
    assert uncond.validate(_clip_request(configured["unet"])).clip_method == "cutouts"
    checked = uncond.validate(_clip_request(configured["unet"], clip_method="data set"))
    assert checked.clip_method == "cutouts" and any("clip_method 'data set'" in w for w in checked.warnings)
    cutouts = uncond.generate(_clip_request(referenced, clip_method="cutouts"))
    assert cutouts.info["clip_method"] == "cutouts" and cutouts.info["cuts"] == 4


def test_images_made_before_the_keyword_read_back_as_cutouts():
    from pipelines.infotext import parse_infotext, request_values

    old = "\nSteps: 50, Seed: 3, CLIP strength: 3, Cutouts: 4, Studio task: clip_guided"
    assert request_values(parse_infotext(old))[1]["clip_method"] == "cutouts"


def test_the_keyword_is_validated(configured):
    from pipelines import unconditional as uncond

    with pytest.raises(ValueError, match="clip_method .*'nearest'"):
        uncond.validate(_clip_request(configured["unet"], clip_method="nearest"))
