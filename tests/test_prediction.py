"""Predicted x0 from alphas_cumprod[t] matches the schedulers, for every prediction type."""

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from guidance.prediction import model_output_from_x0_and_eps, predicted_x0_and_eps


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("scheduler_class", [DDIMScheduler, DDPMScheduler])
def test_x0_matches_scheduler(prediction_type, scheduler_class):
    scheduler = scheduler_class(num_train_timesteps=1000, clip_sample=False, prediction_type=prediction_type)
    scheduler.set_timesteps(20)
    generator = torch.Generator().manual_seed(0)
    for timestep in scheduler.timesteps[::4]:
        sample = torch.randn(2, 3, 8, 8, generator=generator)
        model_output = torch.randn(2, 3, 8, 8, generator=generator)
        expected = scheduler.step(model_output, timestep, sample, generator=generator).pred_original_sample
        x0, _ = predicted_x0_and_eps(model_output, sample, scheduler.alphas_cumprod[timestep], prediction_type)
        torch.testing.assert_close(x0, expected, rtol=1e-5, atol=1e-5)


def test_x0_uses_timestep_not_loop_index():
    scheduler = DDIMScheduler(num_train_timesteps=1000)
    scheduler.set_timesteps(50)
    timestep = scheduler.timesteps[0]  # 980: alphas_cumprod is about 4e-5 there, not about 1 as at index 0
    sample, eps = torch.ones(1, 3, 2, 2), torch.zeros(1, 3, 2, 2)
    x0, _ = predicted_x0_and_eps(eps, sample, scheduler.alphas_cumprod[timestep], "epsilon")
    assert x0.mean().item() == pytest.approx(1 / scheduler.alphas_cumprod[timestep].sqrt().item(), rel=1e-5)
    assert x0.mean().item() > 100  # never clamped


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_round_trip_through_model_output(prediction_type):
    generator = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(2, 3, 4, 4, generator=generator), torch.randn(2, 3, 4, 4, generator=generator)
    alpha = torch.tensor(0.3)
    model_output, sample = model_output_from_x0_and_eps(x0, eps, alpha, prediction_type)
    x0_back, eps_back = predicted_x0_and_eps(model_output, sample, alpha, prediction_type)
    torch.testing.assert_close(x0_back, x0, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(eps_back, eps, rtol=1e-5, atol=1e-5)


def test_unknown_prediction_type_is_named():
    with pytest.raises(ValueError, match="'flow'"):
        predicted_x0_and_eps(torch.zeros(1), torch.zeros(1), 0.5, "flow")
