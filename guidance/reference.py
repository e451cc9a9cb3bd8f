"""Guidance by the exact noisy classifier over a model's own training images (data-set guidance).

A diffusion model trained on a small data set keeps close to its images. For one image per class and the forward
process x_t = sqrt(a) x_j + sqrt(1 - a) noise, p(j | x_t) over the data set is Bayes' rule on Gaussian likelihoods,
what a perfectly trained noise-aware classifier would answer. With a target (a prompt, a picture) that CLIP reads as
a distribution q(j) over the same images, log p(target | x_t) = logsumexp_j(log q_j + log p(x_t | j)) - logsumexp_j
log p(x_t | j); its gradient on x_t points from the unconditional posterior mean to the target's (classifier guidance,
Dhariwal & Nichol 2021, with the Bayes-optimal classifier). docs/clip-steering.md measures why and how well.
"""

from __future__ import annotations

import torch

# The least 1 - a_t the likelihoods use: the final scoring of clean samples (a = 1) stays finite.
MIN_NOISE_VARIANCE = 1e-4


def log_likelihoods(noisy: torch.Tensor, alpha: torch.Tensor | float, references: torch.Tensor) -> torch.Tensor:
    """(B, N) log p(x_t | reference j) up to a constant per row: -|x_t - sqrt(a) x_j|^2 / (2 (1 - a)), for noisy
    samples (B, ...) and references (N, ...) of the same shape per item."""
    alpha = torch.as_tensor(alpha, dtype=torch.float32, device=noisy.device)
    flat, images = noisy.flatten(1).float(), references.flatten(1).to(noisy.device, torch.float32)
    cross = flat @ images.T
    squared = (flat * flat).sum(1, keepdim=True) - 2 * alpha.sqrt() * cross + alpha * (images * images).sum(1)[None]
    return -squared / (2 * (1 - alpha).clamp_min(MIN_NOISE_VARIANCE))


class ReferencePosterior:
    """Per-sample -log p(target | x_t) of the exact noisy classifier over `references` (N images as the model
    sees them), the target being `log_prior` (N,) or one row per sample (B, N): log q(j), which references it means.
    Called with the noisy sample and its a_t (a noisy term of the guided loop)."""

    def __init__(self, references: torch.Tensor, log_prior: torch.Tensor):
        if log_prior.shape[-1] != references.shape[0]:
            raise ValueError(f"log_prior has {log_prior.shape[-1]} entries for {references.shape[0]} references")
        self.references = references
        self.log_prior = log_prior

    def __call__(self, noisy: torch.Tensor, alpha: torch.Tensor | float) -> torch.Tensor:
        if self.references.device != noisy.device:  # moved once, not every step
            self.references = self.references.to(noisy.device, torch.float32)
        likelihoods = log_likelihoods(noisy, alpha, self.references)
        prior = self.log_prior.to(likelihoods.device, likelihoods.dtype)
        return torch.logsumexp(likelihoods, dim=1) - torch.logsumexp(likelihoods + prior, dim=1)


def target_log_prior(similarities: torch.Tensor, weights: list[float], temperature: float) -> torch.Tensor:
    """log q(j) (N,) of a guidance target over the references: a softmax of `temperature` x the strength-weighted
    mean of each target's similarities (K, N) to them (text and picture targets, as CLIP guidance mixes them)."""
    weight = torch.tensor(weights, dtype=torch.float32, device=similarities.device)[:, None]
    mixed = (similarities.float() * weight).sum(0) / weight.sum()
    return torch.log_softmax(temperature * mixed, dim=0)
