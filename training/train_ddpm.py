"""Train the bundled unconditional emoji DDPM (pixel space) and export it in diffusers format (fp16 EMA weights).

python training/train_ddpm.py --minutes 100 --resume 1          # CPU: 100 minutes, continuing the last run
python training/train_ddpm.py --steps 3 --batch-size 4 --out /tmp/x --checkpoints /tmp/c   # toy scale (tests)

The run stops at `--steps` or after `--minutes` of wall-clock time, whichever comes first; it checkpoints model,
EMA, optimiser, step and every RNG state to `--checkpoints` every `--checkpoint-minutes` and at the end, and
exports the EMA weights to `--out` at the same moments. `--resume 1` continues from the checkpoint; when there is
none it starts warm from the weights already exported in `--out` (the shipped model) if present. Given the seed,
a run is deterministic, resumed or not.
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from pipelines.bundled import MAX_SHARD_SIZE, weights_at  # noqa: E402
from training.build_emoji_dataset import DEFAULT_OUT, load_dataset  # noqa: E402
from training.common import (  # noqa: E402
    EMA,
    Budget,
    apply_gradients,
    autocast,
    diffusion_loss,
    downsample,
    images_to_tensor,
    load_checkpoint,
    noise_for,
    noised_batch,
    parameter_count,
    parse_config,
    pick_device,
    posterior_mean,
    random_batches,
    restore_rng,
    rng_state,
    save_checkpoint,
    save_grid,
    seed_everything,
    warmup_lr,
)


@dataclass
class DDPMConfig:
    data: str = DEFAULT_OUT  # the .npz written by build_emoji_dataset.py
    out: str = "models/emoji/ddpm"  # where the DDPMPipeline folder (EMA weights, fp16) is exported
    checkpoints: str = "checkpoints/ddpm"  # git-ignored: last.pt (full training state) and sample grids
    resume: bool = False  # continue from `checkpoints`, else warm-start from the export in `out` if any
    minutes: float = 0.0  # wall-clock budget of this invocation (0: none)
    steps: int = 200_000  # stop at this total optimiser step count
    size: int = 32  # training resolution (the data set is 64x64, area-downsampled)
    batch_size: int = 64
    learning_rate: float = 1e-3
    warmup: int = 200  # linear learning-rate warm-up steps, then constant (runs are resumed across sessions)
    ema_decay: float = 0.999
    min_snr_gamma: float = 5.0  # Min-SNR-gamma loss weighting; 0 turns it off
    prediction_type: str = "v_prediction"
    target: str = "posterior"  # "posterior": regress E[x0 | x_t] over the data set (no target noise); "sample": x0
    block_out_channels: tuple[int, ...] = (48, 96, 192)  # 6.5M parameters
    layers_per_block: int = 1
    seed: int = 0
    checkpoint_minutes: float = 10.0
    sample_minutes: float = 15.0  # write a grid of samples this often (and at the end)
    sample_every: int = 0  # also every this many steps (0: only by the clock)
    sample_count: int = 16  # images per sample grid
    eval_count: int = 48  # images in the ideal-denoiser-gap evaluation at every checkpoint
    device: str | None = None  # default: cuda if available


def build_unet(config: DDPMConfig):
    """The UNet: residual blocks with scale-shift time conditioning, self-attention below the top level."""
    from diffusers import UNet2DModel

    levels = len(config.block_out_channels)
    down = ("DownBlock2D",) + ("AttnDownBlock2D",) * (levels - 1)
    return UNet2DModel(
        sample_size=config.size,
        block_out_channels=config.block_out_channels,
        layers_per_block=config.layers_per_block,
        down_block_types=down,
        up_block_types=tuple(reversed([name.replace("Down", "Up") for name in down])),
        norm_num_groups=32 if min(config.block_out_channels) % 32 == 0 else 16,
        attention_head_dim=32,
        resnet_time_scale_shift="scale_shift",
    )


def build_scheduler(config: DDPMConfig):
    """Cosine noise schedule (reaches nearly pure noise), v- or epsilon prediction, x0 clipped while sampling."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        prediction_type=config.prediction_type,
        clip_sample=True,
    )


@torch.no_grad()
def sample_grid(unet, scheduler, path: str, count: int = 16, steps: int = 25, seed: int = 0) -> str:
    """DDIM samples of fixed seeds from `unet`, saved as a PNG grid."""
    from diffusers import DDIMScheduler
    from diffusers.utils.torch_utils import randn_tensor

    from guidance.sampler import guided_sample

    device = next(unet.parameters()).device
    size = unet.config.sample_size
    generators = [torch.Generator().manual_seed(seed + index) for index in range(count)]
    noise = randn_tensor((count, 3, size, size), generator=generators, device=device, dtype=torch.float32)
    images = guided_sample(unet, DDIMScheduler.from_config(scheduler.config), noise, steps)
    return save_grid(images, path)


EVAL_TIMESTEPS = (50, 200, 400, 600, 800, 950)


@torch.no_grad()
def ideal_denoiser_gap(unet, scheduler, data: torch.Tensor, count: int = 48, seed: int = 12345) -> float:
    """Mean squared distance between the model's predicted x0 and the ideal denoiser's, on fixed noisy images.

    Independent of the training target, so runs with different recipes compare on one number (lower is better).
    """
    from guidance.prediction import predicted_x0_and_eps

    generator = torch.Generator().manual_seed(seed)
    device = next(unet.parameters()).device
    count = min(count, len(data))  # a toy data set may hold fewer images than the evaluation asks for
    clean = data[torch.randperm(len(data), generator=generator)[:count]]
    gaps = []
    for timestep in EVAL_TIMESTEPS:
        alpha = scheduler.alphas_cumprod[timestep].cpu()  # the noising stays on the CPU with its generator
        noisy = alpha.sqrt() * clean + (1 - alpha).sqrt() * torch.randn(clean.shape, generator=generator)
        output = unet(noisy.to(device), torch.full((count,), timestep, device=device)).sample.float()
        x0, _ = predicted_x0_and_eps(output, noisy.to(device), alpha.to(device), scheduler.config.prediction_type)
        ideal = posterior_mean(noisy, alpha.expand(count), data).to(device)
        gaps.append((x0 - ideal).pow(2).mean().item())
    return sum(gaps) / len(gaps)


def export(unet_state: dict, config: DDPMConfig) -> str:
    """Write the DDPMPipeline folder (fp16 UNet + scheduler) from a state dict."""
    from diffusers import DDPMPipeline

    unet = build_unet(config).eval()
    unet.load_state_dict(unet_state)
    DDPMPipeline(unet=unet.half(), scheduler=build_scheduler(config)).save_pretrained(
        config.out, safe_serialization=True, max_shard_size=MAX_SHARD_SIZE
    )
    return config.out


def warm_start_weights(config: DDPMConfig) -> dict | None:
    """The UNet weights already exported in `config.out` (the shipped model), or None."""
    from diffusers import UNet2DModel

    path = os.path.join(config.out, "unet")
    if not weights_at(os.path.join(path, "diffusion_pytorch_model.safetensors")):
        return None
    return {name: value.float() for name, value in UNet2DModel.from_pretrained(path).state_dict().items()}


def train(config: DDPMConfig) -> str:
    """Train within the budget, checkpoint, export fp16 EMA weights to `config.out`; return that folder."""
    generator = seed_everything(config.seed)
    device = pick_device(config.device)
    data = downsample(images_to_tensor(load_dataset(config.data)["images"]), config.size)
    unet, scheduler = build_unet(config).to(device), build_scheduler(config)
    optimiser = torch.optim.AdamW(unet.parameters(), lr=config.learning_rate, weight_decay=0.0)
    step = 0
    state = load_checkpoint(config.checkpoints) if config.resume else None
    if state is not None:
        unet.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        ema = EMA(unet, config.ema_decay)
        ema.shadow = state["ema"]
        step = state["step"]
        restore_rng(state["rng"], generator)
        print(f"resumed from {config.checkpoints} at step {step}")
    else:
        warm = warm_start_weights(config) if config.resume else None
        if warm is not None:
            unet.load_state_dict(warm)
            print(f"no checkpoint: warm start from the export in {config.out}")
        ema = EMA(unet, config.ema_decay)
    alphas = scheduler.alphas_cumprod.to(device)
    data_on_device = data.to(device)
    print(f"{len(data)} images at {config.size}px, {parameter_count(unet) / 1e6:.2f}M parameters, device {device}")
    batches = random_batches(len(data), config.batch_size, config.seed, start_step=step)
    budget = Budget(config.minutes, config.checkpoint_minutes, config.sample_minutes)

    def save_all(sample: bool) -> None:
        save_checkpoint(
            config.checkpoints,
            {
                "model": unet.state_dict(),
                "optimiser": optimiser.state_dict(),
                "ema": ema.shadow,
                "step": step,
                "rng": rng_state(generator),
                "config": asdict(config),
            },
        )
        export(ema.shadow, config)
        averaged = build_unet(config).to(device).eval()
        ema.copy_to(averaged)
        gap = ideal_denoiser_gap(averaged, scheduler, data, count=config.eval_count)
        print(f"step {step}: ideal-denoiser gap of the EMA {gap:.5f}", flush=True)
        if sample:
            path = os.path.join(config.checkpoints, "samples", f"step{step:06d}.png")
            sample_grid(averaged, scheduler, path, count=config.sample_count)

    progress = tqdm(total=config.steps, initial=step, desc="ddpm", mininterval=30)
    while step < config.steps and not budget.expired():
        step += 1
        warmup_lr(optimiser, config.learning_rate, step, config.warmup)
        clean = data_on_device[next(batches)]
        noisy, noise, timesteps, alpha = noised_batch(clean, alphas, generator)
        if config.target == "posterior":
            clean = posterior_mean(noisy, alpha, data_on_device)
            noise = noise_for(noisy, clean, alpha)
        with autocast(device):
            prediction = unet(noisy, timesteps).sample
        loss = diffusion_loss(
            prediction, clean, noise, alpha, timesteps, alphas, config.min_snr_gamma, config.prediction_type
        )
        apply_gradients(loss, optimiser, unet.parameters(), max_norm=1.0)
        ema.update(unet, step)
        progress.update(1)
        progress.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
        sample_now = budget.samples_due(step, config.sample_every)
        if budget.checkpoint_due() or sample_now:
            save_all(sample_now)
    progress.close()
    save_all(sample=True)
    return config.out


if __name__ == "__main__":
    print(train(parse_config(DDPMConfig, __doc__.splitlines()[0])))
