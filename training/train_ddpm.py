"""Train the bundled unconditional emoji DDPM (64x64, pixel space) and export it in diffusers format (fp16).

python training/train_ddpm.py --out models/emoji/ddpm               # full run (GPU)
python training/train_ddpm.py --steps 3 --batch-size 4 --out /tmp/x  # toy scale (CPU smoke test)
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from training.build_emoji_dataset import DEFAULT_OUT, load_dataset  # noqa: E402
from training.common import (  # noqa: E402
    EMA,
    images_to_tensor,
    parameter_count,
    parse_config,
    pick_device,
    random_batches,
    save_grid,
    seed_everything,
)


@dataclass
class DDPMConfig:
    data: str = DEFAULT_OUT  # the .npz written by build_emoji_dataset.py
    out: str = "models/emoji/ddpm"  # where the DDPMPipeline folder is written
    steps: int = 30_000  # optimiser steps
    batch_size: int = 128
    learning_rate: float = 3e-4
    warmup: int = 500  # linear learning-rate warm-up steps
    ema_decay: float = 0.9995
    block_out_channels: tuple[int, ...] = (32, 64, 128, 128)  # 4.3M parameters: 25 steps x batch 4 < 3 s on 2 cores
    seed: int = 0
    sample_every: int = 2_000  # write a grid of samples this often (and at the end)
    sample_count: int = 16  # images per sample grid
    device: str | None = None  # default: cuda if available


def build_unet(config: DDPMConfig):
    """The UNet: plain residual blocks, self-attention at 16x16."""
    from diffusers import UNet2DModel

    down = ("DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "DownBlock2D")
    return UNet2DModel(
        sample_size=64,
        block_out_channels=config.block_out_channels,
        layers_per_block=1,
        down_block_types=down[: len(config.block_out_channels)],
        up_block_types=tuple(reversed([name.replace("Down", "Up") for name in down[: len(config.block_out_channels)]])),
        norm_num_groups=16,
        attention_head_dim=32,
    )


def build_scheduler():
    """Cosine noise schedule (better than linear for 64x64 images), epsilon prediction."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", clip_sample=True)


@torch.no_grad()
def sample_grid(unet, scheduler, path: str, count: int = 16, steps: int = 25, seed: int = 0) -> str:
    """DDIM samples from `unet`, saved as a PNG grid."""
    from diffusers import DDIMScheduler
    from diffusers.utils.torch_utils import randn_tensor

    from guidance.sampler import guided_sample

    device = next(unet.parameters()).device
    generators = [torch.Generator().manual_seed(seed + index) for index in range(count)]
    noise = randn_tensor((count, 3, 64, 64), generator=generators, device=device, dtype=torch.float32)
    images = guided_sample(unet, DDIMScheduler.from_config(scheduler.config), noise, steps)
    return save_grid(images, path)


def train(config: DDPMConfig) -> str:
    """Train, export fp16 weights to `config.out`, return that folder."""
    from diffusers import DDPMPipeline

    generator = seed_everything(config.seed)
    device = pick_device(config.device)
    data = images_to_tensor(load_dataset(config.data)["images"])
    unet, scheduler = build_unet(config).to(device), build_scheduler()
    ema = EMA(unet, config.ema_decay)
    optimiser = torch.optim.AdamW(unet.parameters(), lr=config.learning_rate, weight_decay=0.0)
    alphas = scheduler.alphas_cumprod.to(device)
    print(f"{len(data)} images, {parameter_count(unet) / 1e6:.2f}M parameters, device {device}")
    batches = random_batches(len(data), min(config.batch_size, len(data)), generator)
    progress = tqdm(range(1, config.steps + 1), desc="ddpm")
    for step in progress:
        for group in optimiser.param_groups:
            group["lr"] = config.learning_rate * min(1.0, step / config.warmup)
        clean = data[next(batches)].to(device)
        noise = torch.randn(clean.shape, generator=generator).to(device)
        timesteps = torch.randint(0, 1000, (len(clean),), generator=generator).to(device)
        alpha = alphas[timesteps].view(-1, 1, 1, 1)
        noisy = alpha.sqrt() * clean + (1 - alpha).sqrt() * noise
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = F.mse_loss(unet(noisy, timesteps).sample.float(), noise)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimiser.step()
        ema.update(unet, step)
        progress.set_postfix(loss=f"{loss.item():.4f}")
        if step % config.sample_every == 0 or step == config.steps:
            averaged = build_unet(config).to(device).eval()
            ema.copy_to(averaged)
            path = os.path.join(config.out, "samples", f"step{step:06d}.png")
            sample_grid(averaged, scheduler, path, count=config.sample_count)
    export = build_unet(config).eval()
    ema.copy_to(export)
    DDPMPipeline(unet=export.half(), scheduler=scheduler).save_pretrained(config.out, safe_serialization=True)
    return config.out


if __name__ == "__main__":
    print(train(parse_config(DDPMConfig, __doc__.splitlines()[0])))
