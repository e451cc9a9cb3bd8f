"""Helpers shared by the training scripts: seeding, devices, batches, sample grids, fp16 export."""

from __future__ import annotations

import math
import os
import random

import numpy as np
import torch
from PIL import Image


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a CPU generator for the script's own draws."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def pick_device(name: str | None = None) -> torch.device:
    """The requested device, else CUDA when available, else CPU."""
    return torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1)


def random_batches(count: int, batch_size: int, seed: int, start_step: int = 0):
    """Endless index batches, a fresh permutation per epoch; batch k depends only on (seed, k), so a resumed run
    continues exactly where it stopped."""
    batch_size = min(batch_size, count)
    per_epoch = count // batch_size
    step = start_step
    while True:
        epoch, position = divmod(step, per_epoch)
        order = torch.randperm(count, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        yield order[position * batch_size : (position + 1) * batch_size]
        step += 1


def save_grid(images, path: str, columns: int | None = None) -> str:
    """Save images (uint8 (N, H, W, 3) or float (N, 3, H, W) in [-1, 1]) as one PNG grid."""
    if isinstance(images, torch.Tensor):
        images = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    count, height, width, _ = images.shape
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    grid = np.full((rows * height, columns * width, 3), 255, dtype=np.uint8)
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        grid[row * height : (row + 1) * height, column * width : (column + 1) * width] = image
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray(grid).save(path)
    return path


class EMA:
    """Exponential moving average of a model's parameters (the weights that get exported)."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.shadow = {name: value.detach().clone().float() for name, value in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        """Move the average toward the model's current weights; early steps average over fewer of them."""
        decay = min(self.decay, (1 + step) / (10 + step))
        for name, value in model.state_dict().items():
            if value.dtype.is_floating_point:
                self.shadow[name].mul_(decay).add_(value.detach().float(), alpha=1 - decay)
            else:
                self.shadow[name].copy_(value)

    def copy_to(self, model: torch.nn.Module) -> None:
        """Load the averaged weights into `model`."""
        model.load_state_dict({name: value.to(model.state_dict()[name].dtype) for name, value in self.shadow.items()})


def parameter_count(model: torch.nn.Module) -> int:
    """Number of parameters."""
    return sum(parameter.numel() for parameter in model.parameters())


def parse_config(config_class, description: str, argv=None):
    """A `config_class` dataclass filled from command-line flags named after its fields (--batch-size ...)."""
    import argparse
    import dataclasses

    kinds = {"int": int, "float": float, "str": str, "str | None": str, "bool": int}
    parser = argparse.ArgumentParser(description=description)
    for field in dataclasses.fields(config_class):
        flag = "--" + field.name.replace("_", "-")
        if str(field.type).startswith("tuple"):
            parser.add_argument(flag, type=int, nargs="+", default=list(field.default))
        else:
            parser.add_argument(flag, type=kinds[str(field.type)], default=field.default)
    values = vars(parser.parse_args(argv))
    for field in dataclasses.fields(config_class):
        if str(field.type).startswith("tuple"):
            values[field.name] = tuple(values[field.name])
    return config_class(**values)


def downsample(images: torch.Tensor, size: int) -> torch.Tensor:
    """(N, 3, H, W) -> (N, 3, size, size) by area averaging (the identity when already that size)."""
    if images.shape[-1] == size:
        return images
    return torch.nn.functional.interpolate(images, size=(size, size), mode="area")


def fast_bf16(device: torch.device) -> bool:
    """Whether bf16 autocast speeds training up on `device`: CUDA, or a CPU with native bf16 (AVX512-BF16 or AMX).

    On a CPU without it (AVX2 only) bf16 is emulated and measured about 35x slower than fp32, so it stays off.
    """
    if device.type == "cuda":
        return True
    try:
        with open("/proc/cpuinfo") as handle:
            flags = next((line for line in handle if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast(device: torch.device, enabled: bool | None = None):
    """bf16 autocast where it is fast (see `fast_bf16`), else a no-op context."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=fast_bf16(device) if enabled is None else enabled)


def min_snr_weights(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor, gamma: float, prediction_type: str):
    """Min-SNR-gamma loss weights (Hang et al. 2023) per sample, for an MSE on the model's own target.

    gamma <= 0 turns the weighting off (all ones).
    """
    if gamma <= 0:
        return torch.ones(len(timesteps), device=timesteps.device)
    alpha = alphas_cumprod[timesteps]
    snr = alpha / (1 - alpha)
    clipped = snr.clamp(max=gamma)
    if prediction_type == "epsilon":
        return clipped / snr
    if prediction_type == "v_prediction":
        return clipped / (snr + 1)
    return clipped  # "sample": the x0 MSE times min(snr, gamma)


def posterior_mean(noisy: torch.Tensor, alpha: torch.Tensor, data: torch.Tensor) -> torch.Tensor:
    """E[x0 | x_t] when x0 is drawn uniformly from `data` (N, C, H, W): the ideal denoiser of the training set.

    Regressing this instead of the one x0 that made x_t has the same minimiser as the usual denoising loss but no
    target variance (the "stable target field" of Xu et al. 2023 with the whole data set as reference batch).
    """
    flat, reference = noisy.flatten(1).float(), data.flatten(1).float()
    scale = alpha.flatten().float()
    # -|x - sqrt(a) d|^2 / (2 (1 - a)), without the |x|^2 term that is the same for every d.
    logits = (2 * scale.sqrt()[:, None] * (flat @ reference.T) - scale[:, None] * reference.pow(2).sum(1)) / (
        2 * (1 - scale)[:, None]
    )
    return (logits.softmax(dim=1) @ reference).view_as(noisy).to(noisy.dtype)


def diffusion_target(clean: torch.Tensor, noise: torch.Tensor, alpha: torch.Tensor, prediction_type: str):
    """What the model regresses for x_t = sqrt(a) x0 + sqrt(1-a) eps: eps, v or x0."""
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        return alpha.sqrt() * noise - (1 - alpha).sqrt() * clean
    return clean


def noised_batch(clean: torch.Tensor, alphas_cumprod: torch.Tensor, generator: torch.Generator):
    """(noisy, noise, timesteps, alpha) for a batch: noise then timesteps drawn from `generator` (in that order)."""
    noise = torch.randn(clean.shape, generator=generator).to(clean.device)
    timesteps = torch.randint(0, len(alphas_cumprod), (len(clean),), generator=generator).to(clean.device)
    alpha = alphas_cumprod[timesteps].view(-1, *([1] * (clean.ndim - 1)))
    return alpha.sqrt() * clean + (1 - alpha).sqrt() * noise, noise, timesteps, alpha


def noise_for(noisy: torch.Tensor, clean: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """The eps with x_t = sqrt(a) x0 + sqrt(1-a) eps for a given x0 (after x0 was replaced by an ideal target)."""
    return (noisy - alpha.sqrt() * clean) / (1 - alpha).sqrt()


def diffusion_loss(prediction, clean, noise, alpha, timesteps, alphas_cumprod, gamma: float, prediction_type: str):
    """Mean over the batch of the per-sample MSE to the model's target, Min-SNR-gamma weighted."""
    target = diffusion_target(clean, noise, alpha, prediction_type)
    per_sample = (prediction.float() - target).pow(2).mean(dim=tuple(range(1, target.ndim)))
    return (per_sample * min_snr_weights(alphas_cumprod, timesteps, gamma, prediction_type)).mean()


def warmup_lr(optimiser: torch.optim.Optimizer, base: float, step: int, warmup: int) -> None:
    """Set the learning rate: linear warm-up over `warmup` steps, then constant (runs are resumed across sessions)."""
    for group in optimiser.param_groups:
        group["lr"] = base * min(1.0, step / warmup)


class Budget:
    """Wall-clock and step budget of a training run, and when the next checkpoint or sample grid is due."""

    def __init__(self, minutes: float, checkpoint_minutes: float, sample_minutes: float):
        import time

        self._now = time.monotonic
        self.started = self._now()
        self.deadline = self.started + minutes * 60 if minutes > 0 else float("inf")
        self.checkpoint_every, self.sample_every = checkpoint_minutes * 60, sample_minutes * 60
        self.last_checkpoint = self.last_sample = self.started

    def expired(self) -> bool:
        """Whether the wall-clock budget is spent."""
        return self._now() >= self.deadline

    def checkpoint_due(self) -> bool:
        """True once per `checkpoint_minutes`."""
        if self._now() - self.last_checkpoint >= self.checkpoint_every:
            self.last_checkpoint = self._now()
            return True
        return False

    def sample_due(self) -> bool:
        """True once per `sample_minutes`."""
        if self._now() - self.last_sample >= self.sample_every:
            self.last_sample = self._now()
            return True
        return False

    def samples_due(self, step: int, every_steps: int = 0) -> bool:
        """True once per `sample_minutes`, and also at every `every_steps`-th step when that is above 0."""
        return self.sample_due() or (every_steps > 0 and step % every_steps == 0)


def apply_gradients(loss: torch.Tensor, optimiser, parameters=None, max_norm: float | None = None) -> None:
    """One optimiser step on `loss`; gradients of `parameters` clipped to `max_norm` first when given."""
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    if max_norm is not None:
        torch.nn.utils.clip_grad_norm_(parameters, max_norm)
    optimiser.step()


def save_checkpoint(folder: str, state: dict) -> str:
    """Write `state` (models, EMA, optimiser, step, RNG states) atomically to folder/last.pt."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "last.pt")
    torch.save(state, path + ".tmp")
    os.replace(path + ".tmp", path)
    return path


def load_checkpoint(folder: str) -> dict | None:
    """The state saved by `save_checkpoint` in `folder`, or None when there is none."""
    path = os.path.join(folder, "last.pt")
    return torch.load(path, map_location="cpu", weights_only=False) if os.path.isfile(path) else None


def rng_state(generator: torch.Generator) -> dict:
    """Every random state a run draws from, for an exact resume."""
    return {
        "generator": generator.get_state(),
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def restore_rng(state: dict, generator: torch.Generator) -> None:
    """Put back the states saved by `rng_state`."""
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
