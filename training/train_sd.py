"""Train the bundled emoji text-to-image model (Stable Diffusion format) and export it (fp16 safetensors).

    python training/train_sd.py --out models/emoji/sd                                  # full run (GPU)
    python training/train_sd.py --vae-steps 2 --unet-steps 2 --batch-size 4 --out /tmp/x   # toy scale (CPU)

Stage 1 trains a small KL autoencoder (64x64 RGB <-> 4x16x16 latents); stage 2 trains a cross-attention UNet
and a CLIP text encoder together on the latents, dropping 10% of captions for classifier-free guidance. The
export is a StableDiffusionPipeline folder (tokenizer rebuilt from open_clip's BPE file), so the app's txt2img,
img2img and inpainting tabs run it unchanged.
"""

from __future__ import annotations

import os
import random
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
from training.train_clip import CAPTION_TEMPLATES  # noqa: E402


@dataclass
class SDConfig:
    data: str = DEFAULT_OUT  # the .npz written by build_emoji_dataset.py
    out: str = "models/emoji/sd"  # the StableDiffusionPipeline folder written
    vae_steps: int = 8_000
    unet_steps: int = 30_000
    batch_size: int = 128
    vae_learning_rate: float = 5e-4
    unet_learning_rate: float = 3e-4
    warmup: int = 500
    kl_weight: float = 1e-6
    caption_dropout: float = 0.1  # empty captions, for classifier-free guidance
    ema_decay: float = 0.9995
    text_width: int = 64
    text_layers: int = 4
    unet_channels: tuple[int, ...] = (64, 128, 128)
    seed: int = 0
    sample_every: int = 5_000
    sample_count: int = 16  # prompts (spread over the data set) per sample grid
    device: str | None = None


def build_vae():
    """64x64x3 <-> 16x16x4 (factor 4)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(32, 64, 64),
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=16,
        sample_size=64,
    )


def build_text_encoder(config: SDConfig):
    """A small CLIP text transformer over the standard 49408-token vocabulary."""
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(
        CLIPTextConfig(
            hidden_size=config.text_width,
            intermediate_size=4 * config.text_width,
            num_attention_heads=max(1, config.text_width // 16),
            num_hidden_layers=config.text_layers,
            vocab_size=49408,
            max_position_embeddings=77,
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
        )
    )


def build_unet(config: SDConfig):
    """Cross-attention UNet on 16x16 latents."""
    from diffusers import UNet2DConditionModel

    levels = len(config.unet_channels)
    return UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        block_out_channels=config.unet_channels,
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D",) * (levels - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (levels - 1),
        cross_attention_dim=config.text_width,
        attention_head_dim=8,
        norm_num_groups=32,
    )


def build_scheduler():
    """Stable Diffusion 1.x's noise schedule and default scheduler config."""
    from diffusers import PNDMScheduler

    return PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        skip_prk_steps=True,
        steps_offset=1,
        set_alpha_to_one=False,
    )


def _lr(step: int, config: SDConfig, base: float) -> float:
    """Linear warm-up, then constant."""
    return base * min(1.0, step / config.warmup)


def train_vae(config: SDConfig, images: torch.Tensor, device, generator):
    """Stage 1: reconstruction (L1 + MSE) with a light KL term; returns the trained VAE."""
    vae = build_vae().to(device)
    optimiser = torch.optim.AdamW(vae.parameters(), lr=config.vae_learning_rate)
    batches = random_batches(len(images), min(config.batch_size, len(images)), generator)
    print(f"VAE: {parameter_count(vae) / 1e6:.2f}M parameters")
    for step in (progress := tqdm(range(1, config.vae_steps + 1), desc="vae")):
        for group in optimiser.param_groups:
            group["lr"] = _lr(step, config, config.vae_learning_rate)
        batch = images[next(batches)].to(device)
        posterior = vae.encode(batch).latent_dist
        reconstruction = vae.decode(posterior.sample(generator=None)).sample
        loss = F.l1_loss(reconstruction, batch) + F.mse_loss(reconstruction, batch)
        loss = loss + config.kl_weight * posterior.kl().mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        progress.set_postfix(loss=f"{loss.item():.4f}")
    return vae.eval().requires_grad_(False)


@torch.no_grad()
def encode_all(vae, images: torch.Tensor, device) -> torch.Tensor:
    """The posterior means of every image's latents, unscaled, on the CPU."""
    return torch.cat(
        [vae.encode(images[i : i + 256].to(device)).latent_dist.mean.cpu() for i in range(0, len(images), 256)]
    )


def assemble(vae, text_encoder, unet, tokenizer):
    """A StableDiffusionPipeline from the parts, with no safety checker (the data set is emoji)."""
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=build_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def train(config: SDConfig) -> str:
    """Train both stages, write sample grids and the fp16 export to `config.out`; return it."""
    from training.tokenizer import save_clip_tokenizer

    generator = seed_everything(config.seed)
    rng = random.Random(config.seed)
    device = pick_device(config.device)
    dataset = load_dataset(config.data)
    images, names = images_to_tensor(dataset["images"]), list(dataset["names"])
    tokenizer = save_clip_tokenizer(os.path.join(config.out, "tokenizer"))
    vae = train_vae(config, images, device, generator)
    latents = encode_all(vae, images, device)
    # SD's `scaling_factor`: 1 / std of the latents, so the diffusion model sees unit-variance inputs.
    vae.register_to_config(scaling_factor=float(1.0 / latents.std()))
    latents = latents * vae.config.scaling_factor

    text_encoder, unet = build_text_encoder(config).to(device), build_unet(config).to(device)
    parameters = list(text_encoder.parameters()) + list(unet.parameters())
    optimiser = torch.optim.AdamW(parameters, lr=config.unet_learning_rate, weight_decay=0.01)
    ema_unet, ema_text = EMA(unet, config.ema_decay), EMA(text_encoder, config.ema_decay)
    scheduler = build_scheduler()
    alphas = scheduler.alphas_cumprod.to(device)
    print(f"UNet: {parameter_count(unet) / 1e6:.2f}M, text encoder: {parameter_count(text_encoder) / 1e6:.2f}M")
    batches = random_batches(len(latents), min(config.batch_size, len(latents)), generator)
    for step in (progress := tqdm(range(1, config.unet_steps + 1), desc="unet")):
        for group in optimiser.param_groups:
            group["lr"] = _lr(step, config, config.unet_learning_rate)
        indices = next(batches)
        clean = latents[indices].to(device)
        texts = [
            "" if rng.random() < config.caption_dropout else rng.choice(CAPTION_TEMPLATES).format(names[i])
            for i in indices.tolist()
        ]
        tokens = tokenizer(texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
        noise = torch.randn(clean.shape, generator=generator).to(device)
        timesteps = torch.randint(0, 1000, (len(clean),), generator=generator).to(device)
        alpha = alphas[timesteps].view(-1, 1, 1, 1)
        noisy = alpha.sqrt() * clean + (1 - alpha).sqrt() * noise
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            hidden = text_encoder(tokens.input_ids.to(device))[0]
            loss = F.mse_loss(unet(noisy, timesteps, encoder_hidden_states=hidden).sample.float(), noise)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimiser.step()
        ema_unet.update(unet, step)
        ema_text.update(text_encoder, step)
        progress.set_postfix(loss=f"{loss.item():.4f}")
        if step % config.sample_every == 0 or step == config.unet_steps:
            sample_unet, sample_text = (
                build_unet(config).to(device).eval(),
                build_text_encoder(config).to(device).eval(),
            )
            ema_unet.copy_to(sample_unet)
            ema_text.copy_to(sample_text)
            pipeline = assemble(vae, sample_text, sample_unet, tokenizer)
            pipeline.set_progress_bar_config(disable=True)
            spacing = max(1, len(names) // config.sample_count)
            prompts = [names[i] for i in range(0, len(names), spacing)][: config.sample_count]
            with torch.no_grad():
                out = pipeline(
                    prompts, num_inference_steps=25, output_type="pt", generator=torch.Generator().manual_seed(0)
                )
            save_grid(out.images * 2 - 1, os.path.join(config.out, "samples", f"step{step:06d}.png"))
    export_unet, export_text = build_unet(config).eval(), build_text_encoder(config).eval()
    ema_unet.copy_to(export_unet)
    ema_text.copy_to(export_text)
    pipeline = assemble(vae.cpu(), export_text, export_unet, tokenizer).to(torch.float16)
    pipeline.save_pretrained(config.out, safe_serialization=True)
    return config.out


if __name__ == "__main__":
    print(train(parse_config(SDConfig, __doc__.splitlines()[0])))
