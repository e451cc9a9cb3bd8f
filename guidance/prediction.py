"""Convert between a diffusion model's output and its predicted clean image, for any prediction type."""

from __future__ import annotations

import torch

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def _broadcast(alpha_prod_t: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    """alpha_prod_t as a tensor on `like`'s device and dtype, broadcastable against it."""
    alpha = torch.as_tensor(alpha_prod_t, device=like.device, dtype=like.dtype)
    return alpha.reshape(-1, *([1] * (like.ndim - 1))) if alpha.ndim else alpha


def predicted_x0_and_eps(
    model_output: torch.Tensor, sample: torch.Tensor, alpha_prod_t: torch.Tensor | float, prediction_type: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (predicted_x0, predicted_eps) for x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps. Nothing is clamped."""
    alpha = _broadcast(alpha_prod_t, sample)
    sqrt_alpha, sqrt_one_minus_alpha = alpha.sqrt(), (1 - alpha).sqrt()
    if prediction_type == "epsilon":
        eps = model_output
        x0 = (sample - sqrt_one_minus_alpha * eps) / sqrt_alpha
    elif prediction_type == "v_prediction":
        x0 = sqrt_alpha * sample - sqrt_one_minus_alpha * model_output
        eps = sqrt_alpha * model_output + sqrt_one_minus_alpha * sample
    elif prediction_type == "sample":
        x0 = model_output
        eps = (sample - sqrt_alpha * x0) / sqrt_one_minus_alpha
    else:
        raise ValueError(f"prediction_type {prediction_type!r} is not one of {PREDICTION_TYPES}")
    return x0, eps


def model_output_from_x0_and_eps(
    x0: torch.Tensor, eps: torch.Tensor, alpha_prod_t: torch.Tensor | float, prediction_type: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (model_output, sample) that a scheduler reads back as exactly this x0 and eps."""
    alpha = _broadcast(alpha_prod_t, x0)
    sqrt_alpha, sqrt_one_minus_alpha = alpha.sqrt(), (1 - alpha).sqrt()
    sample = sqrt_alpha * x0 + sqrt_one_minus_alpha * eps
    if prediction_type == "epsilon":
        return eps, sample
    if prediction_type == "v_prediction":
        return sqrt_alpha * eps - sqrt_one_minus_alpha * x0, sample
    if prediction_type == "sample":
        return x0, sample
    raise ValueError(f"prediction_type {prediction_type!r} is not one of {PREDICTION_TYPES}")
