"""The one guided sampling loop behind every guided tab.

Each step: one UNet forward, the predicted clean image x0 from a_t (`step_alphas`) and the scheduler's
`prediction_type`, then for each guidance term the gradient of its per-sample loss on the image x0 decodes to
(x0 itself for pixel models; through a VAE decoder or a linear latent-to-RGB map for latent ones), with respect to
x0 by default (no backpropagation through the UNet), or of its loss on the noisy sample x_t with respect to x_t for
a term that says so (a noise-aware model), normalised to unit RMS per sample, and a step of x0 against it
of size `scale * w_t`, where w_t = sqrt(1 - alphas_cumprod[t]) normalised to sum to 1 over the guided steps:
`scale` is the total RMS distance (in [-1, 1] pixel units) that guidance may move x0 over a whole run, whatever
the number of steps (a noisy term may instead take classifier guidance's own unnormalised step: `GuidanceTerm.rule`).
The scheduler then takes exactly one step from the edited x0 and the unchanged predicted
noise, so multistep schedulers (DPM-Solver++) keep a consistent history. With every scale at 0 the loop calls
the UNet and the scheduler exactly as the stock diffusers pipelines do.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from guidance.interrupt import StopRequested
from guidance.particles import Particles, best, reindex_scheduler, resample, scores
from guidance.prediction import model_output_from_x0_and_eps, predicted_x0_and_eps

GRADIENT_METHODS = ("x0", "unet")

StepCallback = Callable[[int, int, torch.Tensor], None]


@dataclass
class GuidanceTerm:
    """One loss plugged into the sampler."""

    name: str  # shown in errors and metadata
    loss: Callable[[torch.Tensor], torch.Tensor]  # predicted_x0 (B, C, H, W) in [-1, 1] -> per-sample losses (B,)
    scale: float  # total RMS movement of x0 over the run; 0 turns the term off
    # What this loss sees of x0 when it is not the image itself (latent models): a decoder to [-1, 1] pixels.
    decode: Callable[[torch.Tensor], torch.Tensor] | None = None
    fraction: float = 1.0  # share of the run's guided steps this term acts on (where its weighting is largest)
    # The loss sees the noisy sample x_t (variance-preserving) instead of x0, and is called as loss(x_t, a_t): for a
    # model of noisy samples, whose gradient there points to what the image should become (classifier guidance,
    # Dhariwal & Nichol 2021).
    noisy: bool = False
    # How the gradient becomes a step of x0 (STEP_RULES): "rms" normalises it to unit RMS per sample and moves x0 by
    # `scale * w_t`; "classifier" (noisy terms only: their loss is -log p(target | x_t)) moves x0 by `scale` x the
    # classifier-guidance shift (1 - a_t) / sqrt(a_t) * grad log p on every guided step, unnormalised: scale 1 samples
    # the exact conditional of a Bayes-optimal classifier, and guidance fades once the sample is on target.
    rule: str = "rms"


STEP_RULES = ("rms", "classifier")


class SamplingInterrupted(Exception):
    """Raised from a step callback to stop sampling; carries the step and the latest predicted x0."""

    def __init__(self, step: int, predicted_x0: torch.Tensor | None = None):
        super().__init__(f"sampling interrupted at step {step}")
        self.step, self.predicted_x0 = step, predicted_x0


def step_alphas(scheduler, timesteps: torch.Tensor, begin_index: int | None = None) -> torch.Tensor:
    """alpha_cumprod of each step the run takes (float64, CPU), as the scheduler itself sees it: from its sigmas
    (a = 1 / (1 + sigma^2)) where it keeps one per timestep (Euler, DPM-Solver++, UniPC: their timesteps may be
    fractional, or rounded from Karras sigmas), else from alphas_cumprod at the timestep (DDIM, DDPM)."""
    sigmas = getattr(scheduler, "sigmas", None)
    if isinstance(sigmas, torch.Tensor) and len(sigmas) == len(scheduler.timesteps) + 1:
        offset = (begin_index or 0) * getattr(scheduler, "order", 1)
        sigma = sigmas[offset : offset + len(timesteps)].to(device="cpu", dtype=torch.float64)
        return 1 / (1 + sigma * sigma)
    return scheduler.alphas_cumprod.to(torch.float64)[timesteps.long().cpu()]


WEIGHTINGS = ("noise", "signal")


def guidance_weights(alphas: torch.Tensor, guided_steps: int, weighting: str = "noise") -> torch.Tensor:
    """w_t = sqrt(1 - a_t) ("noise": most movement while the image is noisiest) or sqrt(a_t) ("signal": most once
    the sample shows x0, so that an edit survives the model's next prediction) on `guided_steps` steps (the first
    ones for "noise", the last ones for "signal"; 0 elsewhere), normalised to sum to 1; `alphas` holds a_t of each
    step."""
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting {weighting!r} is not one of {WEIGHTINGS}")
    alphas = alphas.to(torch.float64)
    weights = (1 - alphas).sqrt() if weighting == "noise" else alphas.sqrt()
    # The guided steps are where the weighting puts its mass: the first ones ("noise") or the last ones ("signal").
    if weighting == "noise":
        weights[guided_steps:] = 0
    else:
        weights[: len(weights) - guided_steps] = 0
    total = weights.sum()
    return (weights / total if total > 0 else weights).to(torch.float32)


# Schedulers whose `step` keeps no state between calls, so a step may be taken again (recurrence).
RECURRENT_SCHEDULERS = ("DDIMScheduler", "DDPMScheduler")


def renoise(
    sample: torch.Tensor,
    alpha_from: torch.Tensor,
    alpha_to: torch.Tensor,
    generator: torch.Generator | list[torch.Generator] | None,
) -> torch.Tensor:
    """Take a variance-preserving sample at noise level `alpha_from` back to the noisier `alpha_to` by the forward
    process between them: sqrt(a_to / a_from) x + sqrt(1 - a_to / a_from) eps, eps drawn from `generator`."""
    from diffusers.utils.torch_utils import randn_tensor

    ratio = (alpha_to / alpha_from).clamp(max=1.0).to(sample.dtype)
    noise = randn_tensor(sample.shape, generator=generator, device=sample.device, dtype=sample.dtype)
    return ratio.sqrt() * sample + (1 - ratio).sqrt() * noise


def normalise_per_sample(gradient: torch.Tensor) -> torch.Tensor:
    """Scale each sample's gradient to unit RMS; a sample with a zero or non-finite gradient gets zero."""
    flat = gradient.flatten(1)
    finite = torch.isfinite(flat).all(dim=1)
    flat = torch.where(finite[:, None], flat, torch.zeros_like(flat))
    rms = flat.pow(2).mean(dim=1).sqrt()
    scale = torch.where(rms > 0, 1 / rms.clamp_min(torch.finfo(flat.dtype).tiny), torch.zeros_like(rms))
    return (flat * scale[:, None]).view_as(gradient)


def bounded_edit(predicted_x0: torch.Tensor, edited_x0: torch.Tensor) -> torch.Tensor:
    """Keep guidance from pushing a pixel further outside [-1, 1] than the model itself put it."""
    return torch.clamp(edited_x0, min=predicted_x0.clamp(max=-1.0), max=predicted_x0.clamp(min=1.0))


def _step_kwargs(scheduler, generator, eta: float | None) -> dict:
    """The keyword arguments this scheduler's `step` accepts: `generator` always, `eta` where it has one."""
    accepted = set(inspect.signature(scheduler.step).parameters)
    kwargs = {"generator": generator} if "generator" in accepted else {}
    if eta is not None and "eta" in accepted:
        kwargs["eta"] = eta
    return kwargs


def _unet_forward(unet, model_input: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
    """Model output in the sample's dtype, whatever dtype the UNet runs in."""
    return unet(model_input.to(unet.dtype), timestep).sample.to(model_input.dtype)


def _loss_gradients(
    terms: Sequence[GuidanceTerm],
    predicted_x0: torch.Tensor,
    wrt: torch.Tensor,
    noisy: torch.Tensor,
    noisy_wrt: torch.Tensor,
    alpha: torch.Tensor,
) -> list[torch.Tensor]:
    """Each term's gradient of its summed per-sample loss on what it sees: `predicted_x0` (made from `wrt`) itself or
    the term's decoding of it, with respect to `wrt`; or, for a noisy term, the noisy sample `noisy` (made from
    `noisy_wrt`) at noise level `alpha`, with respect to `noisy_wrt`."""
    gradients = []
    for index, term in enumerate(terms):
        if term.noisy:
            images, leaf = noisy, noisy_wrt
            losses = term.loss(images.float(), alpha)
        else:
            images, leaf = (term.decode(predicted_x0) if term.decode is not None else predicted_x0), wrt
            losses = term.loss(images.float())
        if losses.ndim != 1 or losses.shape[0] != images.shape[0]:
            raise ValueError(f"guidance {term.name!r} must return one loss per sample, got {tuple(losses.shape)}")
        # Summing keeps each image's gradient independent of the batch (a mean would divide it by B).
        (gradient,) = torch.autograd.grad(losses.sum(), leaf, retain_graph=index < len(terms) - 1)
        gradients.append(gradient.float())
    return gradients


def strength_steps(steps: int, strength: float) -> int:
    """How many of `steps` an img2img strength runs: the last `int(steps * strength)`, as diffusers' img2img and
    inpainting pipelines count them."""
    return min(int(steps * strength), steps)


def schedule(scheduler, num_inference_steps: int, device: torch.device, begin_index: int | None = None) -> torch.Tensor:
    """Set the scheduler's timesteps and return those the run takes: all, or from step `begin_index` on (whose
    first timestep is where img2img noises its input), exactly as diffusers' pipelines set them."""
    scheduler.set_timesteps(num_inference_steps, device=device)
    if begin_index is None:
        return scheduler.timesteps
    order = getattr(scheduler, "order", 1)
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(begin_index * order)
    return scheduler.timesteps[begin_index * order :]


def guided_sample(
    unet: torch.nn.Module,
    scheduler,
    noise: torch.Tensor,
    num_inference_steps: int,
    terms: Sequence[GuidanceTerm] = (),
    *,
    generator: torch.Generator | list[torch.Generator] | None = None,
    eta: float | None = None,
    gradient_method: str = "x0",
    guided_fraction: float = 1.0,
    callback: StepCallback | None = None,
    begin_index: int | None = None,
    clean: torch.Tensor | None = None,
    after_step: Callable[[int, torch.Tensor], torch.Tensor] | None = None,
    weighting: str = "noise",
    recurrence: int = 1,
    particles: Particles | None = None,
) -> torch.Tensor:
    """Denoise `noise` with `scheduler` (a fresh instance: its state is changed) and return the final sample: x_0 in
    [-1, 1] for a pixel model, the clean latents for a latent one.

    `unet(sample, timestep).sample` is any denoiser in diffusers' calling convention: a UNet, or a wrapper that
    hides classifier-free guidance and conditioning (guidance.models.ClassifierFreeGuidance).
    A term's `decode(x0)` turns a predicted clean sample into the image in [-1, 1] its loss sees (a VAE decoder, a
    cheap linear latent-to-RGB map; none for pixel models); the gradient flows back through it to x0, which is
    edited in its own space (pixel edits are bounded to [-1, 1], latent ones are not).
    `begin_index` starts at that step of the schedule (img2img, inpainting), from `clean` noised to its timestep
    with `noise` (pure noise when `clean` is None), and tells the scheduler (`set_begin_index`), as diffusers'
    img2img pipelines do. `after_step(step_index, sample)` may replace the sample after each step (inpainting
    with a plain UNet puts the known region back).
    `weighting` spreads each term's movement over the steps (`guidance_weights`): "noise" for pixel models,
    "signal" for Stable Diffusion, whose strong text conditioning undoes edits made at high noise.
    `generator` feeds the scheduler's own noise (DDPM, DDIM with eta > 0), a list giving one per image.
    `recurrence` > 1 takes every guided step but the last that many times, re-noising its result back to the step's
    noise level in between (Bansal et al. 2023, "Universal Guidance", self-recurrence): the model gets more chances
    to turn an edited x0 into an image it would make, so strong guidance stays on the data (DDIM and DDPM only:
    their steps keep no state; the re-noising draws from `generator` too).
    `particles` runs each image as `particles.count` particles (guidance.particles): `noise` (and `clean`, and a
    generator list) then hold `count` rows per image, image-major; every `particles.every` steps each image's particles
    are resampled by the active terms' losses, and the image's best particle is returned (one row per image).
    `callback(step_index, num_steps, predicted_x0)` runs after every step and may raise SamplingInterrupted(step
    count, predicted_x0). StopRequested raised inside a step (guidance.interrupt.stop_checks) drops that step and
    becomes SamplingInterrupted(completed steps, the last completed step's predicted x0, or the clamped noise).
    """
    if gradient_method not in GRADIENT_METHODS:
        raise ValueError(f"gradient_method {gradient_method!r} is not one of {GRADIENT_METHODS}")
    if num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be at least 1, got {num_inference_steps}")
    if recurrence < 1:
        raise ValueError(f"recurrence must be at least 1, got {recurrence}")
    active_terms = [term for term in terms if term.scale != 0]
    for term in active_terms:
        if term.rule not in STEP_RULES or (term.rule == "classifier" and not term.noisy):
            raise ValueError(f"term {term.name!r}: rule {term.rule!r} is not one of {STEP_RULES} (classifier: noisy)")
    active_scales = [abs(term.scale) for term in active_terms]
    if recurrence > 1 and active_terms and type(scheduler).__name__ not in RECURRENT_SCHEDULERS:
        raise ValueError(
            f"recurrence needs a scheduler that keeps no state between steps ({', '.join(RECURRENT_SCHEDULERS)}), "
            f"got {type(scheduler).__name__}"
        )
    prediction_type = scheduler.config.prediction_type
    timesteps = schedule(scheduler, num_inference_steps, noise.device, begin_index)
    alphas = step_alphas(scheduler, timesteps, begin_index)
    guided_steps = round(len(timesteps) * guided_fraction)
    weights = [  # per term: its movement at each step, on at least one step (classifier terms: 1 on each)
        _term_weights(term, alphas, max(1, round(guided_steps * term.fraction)) if guided_steps else 0, weighting)
        for term in active_terms
    ]
    alphas = alphas.to(device=noise.device, dtype=torch.float32)
    step_kwargs = _step_kwargs(scheduler, generator, eta)

    if clean is None:
        sample = noise * scheduler.init_noise_sigma
    else:
        sample = scheduler.add_noise(clean, noise, timesteps[:1].repeat(noise.shape[0]))
    completed_x0 = None  # the predicted x0 of the last completed step
    count = particles.count if particles is not None else 1
    for index, timestep in enumerate(timesteps):
        try:
            if count > 1 and active_terms and index > 0 and index % particles.every == 0:
                with torch.no_grad():
                    noisy = scheduler.scale_model_input(sample, timestep)
                losses = _losses(active_terms, completed_x0, noisy, alphas[index])
                rows = resample(scores(losses, active_scales, count), particles)
                sample, completed_x0 = sample[rows], completed_x0[rows]
                reindex_scheduler(scheduler, rows, sample.shape)
            step_terms = [(term, w[index]) for term, w in zip(active_terms, weights) if w[index] != 0]

            def take_step(current: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                return _step(
                    unet,
                    scheduler,
                    current,
                    timestep,
                    alphas[index],
                    prediction_type,
                    step_terms,
                    gradient_method,
                    step_kwargs,
                )

            sample, predicted_x0 = take_step(sample)
            if step_terms and index + 1 < len(timesteps):
                for _ in range(recurrence - 1):  # back to this step's noise level, and take it again
                    sample, predicted_x0 = take_step(renoise(sample, alphas[index + 1], alphas[index], generator))
            if after_step is not None:
                sample = after_step(index, sample)
        except StopRequested as stop:
            # Stopped inside this step: its work is dropped; the images are those of the last completed step.
            shown = completed_x0 if completed_x0 is not None else sample.clamp(-1, 1)
            raise SamplingInterrupted(index, shown[::count]) from stop
        completed_x0 = predicted_x0
        if callback is not None:
            callback(index, len(timesteps), predicted_x0[::count])
    if count == 1:
        return sample
    if not active_terms:
        return sample[::count]
    try:
        final = _losses(active_terms, sample, sample, torch.ones((), device=sample.device))
        return sample[best(scores(final, active_scales, count), count)]
    except StopRequested as stop:
        raise SamplingInterrupted(len(timesteps), completed_x0[::count]) from stop


def _term_weights(term: GuidanceTerm, alphas: torch.Tensor, guided_steps: int, weighting: str) -> list[float]:
    """A term's weight at each step: `guidance_weights` for the "rms" rule; 1 on the same guided steps for the
    "classifier" rule, whose step size comes from the noise level itself."""
    weights = guidance_weights(alphas, guided_steps, weighting)
    return (weights > 0).float().tolist() if term.rule == "classifier" else weights.tolist()


def _term_step(term: GuidanceTerm, weight: float, gradient: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """What a term subtracts from x0 this step: by its rule, from its loss's gradient (`GuidanceTerm.rule`)."""
    if term.rule == "classifier":
        return term.scale * weight * classifier_shift(gradient, alpha)
    return term.scale * weight * normalise_per_sample(gradient)


def classifier_shift(gradient: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """The move of x0 against the gradient of -log p(target | x_t) on x_t: (1 - a) / sqrt(a) x gradient (Tweedie: the
    conditional posterior mean minus the unconditional one); a sample with a non-finite gradient gets zero."""
    finite = torch.isfinite(gradient.flatten(1)).all(dim=1).view(-1, *[1] * (gradient.dim() - 1))
    return torch.where(finite, gradient, torch.zeros_like(gradient)) * ((1 - alpha) / alpha.sqrt()).to(gradient.dtype)


def _losses(
    terms: Sequence[GuidanceTerm], predicted_x0: torch.Tensor, noisy: torch.Tensor, alpha: torch.Tensor
) -> list[torch.Tensor]:
    """Each term's per-sample loss, without gradients, on what it sees: the noisy sample (at noise level `alpha`),
    or x0 (decoded)."""
    with torch.no_grad():
        return [
            term.loss(noisy.float(), alpha)
            if term.noisy
            else term.loss((term.decode(predicted_x0) if term.decode is not None else predicted_x0).float())
            for term in terms
        ]


def _step(
    unet: torch.nn.Module,
    scheduler,
    sample: torch.Tensor,
    timestep: torch.Tensor,
    alpha_prod_t: torch.Tensor,
    prediction_type: str,
    terms: Sequence[tuple[GuidanceTerm, float]],
    gradient_method: str,
    step_kwargs: dict,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One sampling step, guided by `terms` (each with its weight at this step): (the next sample, the (edited)
    predicted x0).

    x0 and eps are read from the scaled model input, which is the variance-preserving x_t for every scheduler
    (Euler's samples carry a factor sqrt(1 + sigma^2) that `scale_model_input` removes); an edited sample goes
    back to the scheduler's own scaling."""
    if not terms:
        with torch.no_grad():
            model_input = scheduler.scale_model_input(sample, timestep)
            model_output = _unet_forward(unet, model_input, timestep)
            predicted_x0 = predicted_x0_and_eps(model_output, model_input, alpha_prod_t, prediction_type)[0]
        return scheduler.step(model_output, timestep, sample, **step_kwargs).prev_sample, predicted_x0
    input_scale = scheduler.scale_model_input(torch.ones((), device=sample.device), timestep)
    losses = [term for term, _ in terms]
    if gradient_method == "unet":
        leaf = sample.detach().float().requires_grad_(True)
        with torch.enable_grad():
            model_input = scheduler.scale_model_input(leaf, timestep)
            model_output = _unet_forward(unet, model_input, timestep)
            predicted_x0, eps = predicted_x0_and_eps(model_output, model_input, alpha_prod_t, prediction_type)
            gradients = _loss_gradients(losses, predicted_x0, leaf, model_input, leaf, alpha_prod_t)
        # A noisy term's gradient was taken on the scheduler's sample: on x_t it is that over the input scale.
        gradients = [g / input_scale if term.noisy else g for term, g in zip(losses, gradients)]
        predicted_x0, eps = predicted_x0.detach(), eps.detach()
    else:
        with torch.no_grad():
            model_input = scheduler.scale_model_input(sample, timestep)
            model_output = _unet_forward(unet, model_input, timestep)
            predicted_x0, eps = predicted_x0_and_eps(model_output, model_input, alpha_prod_t, prediction_type)
        leaf = predicted_x0.detach().float().requires_grad_(True)
        noisy_leaf = model_input.detach().float().requires_grad_(True)
        with torch.enable_grad():
            gradients = _loss_gradients(losses, leaf, leaf, noisy_leaf, noisy_leaf, alpha_prod_t)
    with torch.no_grad():
        step = sum(
            _term_step(term, weight, gradient, alpha_prod_t) for (term, weight), gradient in zip(terms, gradients)
        )
        edited_x0 = predicted_x0 - step.to(predicted_x0.dtype)
        if all(term.decode is None for term in losses):  # pixels: no further outside [-1, 1] than the model put them
            edited_x0 = bounded_edit(predicted_x0, edited_x0)
        model_output, edited_input = model_output_from_x0_and_eps(edited_x0, eps, alpha_prod_t, prediction_type)
        edited_sample = edited_input / input_scale.to(edited_input.dtype)
        return scheduler.step(model_output, timestep, edited_sample, **step_kwargs).prev_sample, edited_x0
