"""Train the bundled emoji text-to-image model (Stable Diffusion format) and export it (fp16 safetensors).

    python training/train_sd.py --stage vae --minutes 20 --resume 1    # CPU: stage 1 for 20 minutes
    python training/train_sd.py --stage unet --minutes 80 --resume 1   # CPU: stage 2 for 80 minutes
    python training/train_sd.py --vae-steps 2 --unet-steps 2 --batch-size 4 --out /tmp/x --checkpoints /tmp/c  # toy

Stage 1 trains a small KL autoencoder (64x64 RGB <-> 4x16x16 latents); stage 2 trains a cross-attention UNet
(v-prediction, Min-SNR weighting) and a CLIP text encoder together on the latents, dropping 10% of captions for
classifier-free guidance. `--stage all` runs both (stage 2 once stage 1 reached `--vae-steps`). Each stage stops at
its step count or after `--minutes`, checkpoints to `--checkpoints` every `--checkpoint-minutes`, and `--resume 1`
continues from there (or, with no checkpoint, warm-starts from the export in `--out`). The export is a
StableDiffusionPipeline folder (tokenizer rebuilt from open_clip's BPE file), so the app's txt2img, img2img and
inpainting tabs run it unchanged.
"""

from __future__ import annotations

import copy
import os
import random
import sys
from dataclasses import asdict, dataclass

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from pipelines.bundled import MAX_SHARD_SIZE  # noqa: E402
from training.build_emoji_dataset import DEFAULT_OUT, load_dataset  # noqa: E402
from training.common import (  # noqa: E402
    EMA,
    Budget,
    apply_gradients,
    autocast,
    diffusion_loss,
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
from training.train_clip import CAPTION_TEMPLATES  # noqa: E402


@dataclass
class SDConfig:
    data: str = DEFAULT_OUT  # the .npz written by build_emoji_dataset.py
    out: str = "models/emoji/sd"  # the StableDiffusionPipeline folder written
    checkpoints: str = "checkpoints/sd"  # git-ignored: vae/last.pt and unet/last.pt, sample grids
    stage: str = "all"  # "vae", "unet" or "all"
    resume: bool = False
    minutes: float = 0.0  # wall-clock budget of this invocation (0: none)
    checkpoint_minutes: float = 10.0
    sample_minutes: float = 15.0
    vae_steps: int = 8_000
    unet_steps: int = 200_000
    batch_size: int = 64
    vae_learning_rate: float = 1e-3
    unet_learning_rate: float = 1e-3
    warmup: int = 200
    kl_weight: float = 1e-6
    vae_crop: int = 32  # the VAE trains on random crops of this side (4x cheaper than 64; it is convolutional)
    caption_dropout: float = 0.1  # empty captions, for classifier-free guidance
    ema_decay: float = 0.999
    min_snr_gamma: float = 5.0
    text_width: int = 64
    text_layers: int = 4
    unet_channels: tuple[int, ...] = (64, 128, 128)
    seed: int = 0
    sample_every: int = 0  # also write samples every this many UNet steps (0: only by the clock)
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
    """Stable Diffusion 1.x's noise schedule and scheduler config, with v-prediction (stable at high noise)."""
    from diffusers import PNDMScheduler

    scheduler = PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        skip_prk_steps=True,
        steps_offset=1,
        set_alpha_to_one=False,
        prediction_type="v_prediction",
    )
    # As in SD 1.5's config: DDIM and DDPM built from it must not clamp the predicted latents to [-1, 1].
    scheduler.register_to_config(clip_sample=False)
    return scheduler


def _exported(config: SDConfig, part: str, loader) -> dict | None:
    """The float32 state dict of an exported part (vae, unet, text_encoder) in `config.out`, or None."""
    folder = os.path.join(config.out, part)
    if not os.path.isdir(folder):
        return None
    return {name: value.float() for name, value in loader(folder).state_dict().items()}


def random_crops(images: torch.Tensor, side: int, generator: torch.Generator) -> torch.Tensor:
    """A random `side` x `side` crop of each image, on the latent grid (offsets are multiples of 4)."""
    if side >= images.shape[-1]:
        return images
    offsets = torch.randint(0, (images.shape[-1] - side) // 4 + 1, (len(images), 2), generator=generator) * 4
    return torch.stack([image[:, y : y + side, x : x + side] for image, (y, x) in zip(images, offsets.tolist())])


def reconstruction_psnr(vae, images: torch.Tensor) -> float:
    """Mean PSNR (dB, images in [-1, 1]) of the VAE's reconstructions of `images` at full size."""
    with torch.no_grad():
        device = next(vae.parameters()).device
        batch = images.to(device)
        reconstruction = vae.decode(vae.encode(batch).latent_dist.mean).sample.clamp(-1, 1)
        mse = ((reconstruction - batch) / 2).pow(2).mean(dim=(1, 2, 3))
    return float((-10 * mse.log10()).mean())


def export_vae(vae, config: SDConfig) -> None:
    """Write the VAE alone (fp16) to `config.out`/vae, so stage 2 can start warm on a fresh machine."""
    fp16 = build_vae().eval()
    fp16.load_state_dict(vae.state_dict())
    fp16.half().save_pretrained(os.path.join(config.out, "vae"), safe_serialization=True, max_shard_size=MAX_SHARD_SIZE)


def train_vae(config: SDConfig, images: torch.Tensor, device, generator):
    """Stage 1: reconstruction (L1 + MSE) with a light KL term, within the budget; returns the VAE."""
    from diffusers import AutoencoderKL

    vae = build_vae().to(device)
    optimiser = torch.optim.AdamW(vae.parameters(), lr=config.vae_learning_rate)
    folder = os.path.join(config.checkpoints, "vae")
    keep = config.resume or config.stage == "unet"  # stage 2 alone always starts from the trained VAE
    state = load_checkpoint(folder) if keep else None
    step = 0
    if state is not None:
        vae.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        step = state["step"]
        restore_rng(state["rng"], generator)
    elif keep and (warm := _exported(config, "vae", AutoencoderKL.from_pretrained)) is not None:
        vae.load_state_dict(warm)
    if step >= config.vae_steps or config.stage == "unet":
        return vae.eval().requires_grad_(False)
    batches = random_batches(len(images), config.batch_size, config.seed, start_step=step)
    budget = Budget(config.minutes, config.checkpoint_minutes, config.sample_minutes)
    print(f"VAE: {parameter_count(vae) / 1e6:.2f}M parameters, from step {step}")

    def save(sample: bool) -> None:
        save_checkpoint(
            folder,
            {"model": vae.state_dict(), "optimiser": optimiser.state_dict(), "step": step, "rng": rng_state(generator)},
        )
        export_vae(vae, config)
        print(f"step {step}: VAE reconstruction PSNR {reconstruction_psnr(vae, images[::40]):.2f} dB", flush=True)
        if sample:
            with torch.no_grad():
                batch = images[:16].to(device)
                pairs = torch.cat([batch, vae.decode(vae.encode(batch).latent_dist.mean).sample.clamp(-1, 1)])
            save_grid(pairs, os.path.join(folder, "samples", f"step{step:06d}.png"), columns=16)

    progress = tqdm(total=config.vae_steps, initial=step, desc="vae", mininterval=30)
    while step < config.vae_steps and not budget.expired():
        step += 1
        warmup_lr(optimiser, config.vae_learning_rate, step, config.warmup)
        batch = random_crops(images[next(batches)], config.vae_crop, generator).to(device)
        with autocast(device):
            posterior = vae.encode(batch).latent_dist
            reconstruction = vae.decode(posterior.sample(generator=None)).sample.float()
        loss = F.l1_loss(reconstruction, batch) + F.mse_loss(reconstruction, batch)
        loss = loss + config.kl_weight * posterior.kl().float().mean()
        apply_gradients(loss, optimiser)
        progress.update(1)
        progress.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
        if budget.checkpoint_due():
            save(sample=budget.sample_due())
    progress.close()
    save(sample=True)
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


def caption_batch(indices: list[int], names: list[str], config: SDConfig, rng: random.Random) -> list[str]:
    """A caption per image from a random template; `caption_dropout` of them empty."""
    return [
        "" if rng.random() < config.caption_dropout else rng.choice(CAPTION_TEMPLATES).format(names[i]) for i in indices
    ]


def train_unet(config: SDConfig, vae, names: list[str], images: torch.Tensor, device, generator, tokenizer):
    """Stage 2: text encoder + UNet on the VAE's latents, within the budget; exports the pipeline."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    rng = random.Random(config.seed)
    folder = os.path.join(config.checkpoints, "unet")
    text_encoder, unet = build_text_encoder(config).to(device), build_unet(config).to(device)
    parameters = list(text_encoder.parameters()) + list(unet.parameters())
    optimiser = torch.optim.AdamW(parameters, lr=config.unet_learning_rate, weight_decay=0.01)
    state = load_checkpoint(folder) if config.resume else None
    step = 0
    if state is not None:
        unet.load_state_dict(state["unet"])
        text_encoder.load_state_dict(state["text_encoder"])
        optimiser.load_state_dict(state["optimiser"])
        step = state["step"]
        restore_rng(state["rng"], generator)
        rng.setstate(state["captions_rng"])
        vae.register_to_config(scaling_factor=state["scaling_factor"])
    else:
        if config.resume and (warm := _exported(config, "unet", UNet2DConditionModel.from_pretrained)) is not None:
            unet.load_state_dict(warm)
            text_encoder.load_state_dict(_exported(config, "text_encoder", CLIPTextModel.from_pretrained))
        # SD's `scaling_factor`: 1 / std of the latents, so the diffusion model sees unit-variance inputs.
        vae.register_to_config(scaling_factor=float(1.0 / encode_all(vae, images, device).std()))
    latents = (encode_all(vae, images, device) * vae.config.scaling_factor).to(device)
    ema_unet, ema_text = EMA(unet, config.ema_decay), EMA(text_encoder, config.ema_decay)
    if state is not None:
        ema_unet.shadow, ema_text.shadow = state["ema_unet"], state["ema_text"]
    scheduler = build_scheduler()
    alphas = scheduler.alphas_cumprod.to(device)
    prediction_type = scheduler.config.prediction_type
    print(
        f"UNet: {parameter_count(unet) / 1e6:.2f}M, text encoder: {parameter_count(text_encoder) / 1e6:.2f}M, "
        f"from step {step}"
    )
    batches = random_batches(len(latents), config.batch_size, config.seed + 1, start_step=step)
    budget = Budget(config.minutes, config.checkpoint_minutes, config.sample_minutes)

    def export_and_save(sample: bool) -> None:
        save_checkpoint(
            folder,
            {
                "unet": unet.state_dict(),
                "text_encoder": text_encoder.state_dict(),
                "optimiser": optimiser.state_dict(),
                "ema_unet": ema_unet.shadow,
                "ema_text": ema_text.shadow,
                "step": step,
                "scaling_factor": vae.config.scaling_factor,
                "rng": rng_state(generator),
                "captions_rng": rng.getstate(),
                "config": asdict(config),
            },
        )
        export_unet, export_text = build_unet(config).eval(), build_text_encoder(config).eval()
        ema_unet.copy_to(export_unet)
        ema_text.copy_to(export_text)
        pipeline = assemble(copy.deepcopy(vae), export_text.to(device), export_unet.to(device), tokenizer)
        if sample:
            pipeline.set_progress_bar_config(disable=True)
            spacing = max(1, len(names) // config.sample_count)
            prompts = [names[i] for i in range(0, len(names), spacing)][: config.sample_count]
            with torch.no_grad():
                out = pipeline(
                    prompts, num_inference_steps=25, output_type="pt", generator=torch.Generator().manual_seed(0)
                )
            save_grid(out.images * 2 - 1, os.path.join(folder, "samples", f"step{step:06d}.png"))
        pipeline.to("cpu", torch.float16).save_pretrained(  # a copy of the VAE
            config.out, safe_serialization=True, max_shard_size=MAX_SHARD_SIZE
        )

    progress = tqdm(total=config.unet_steps, initial=step, desc="unet", mininterval=30)
    while step < config.unet_steps and not budget.expired():
        step += 1
        warmup_lr(optimiser, config.unet_learning_rate, step, config.warmup)
        indices = next(batches)
        clean = latents[indices]
        texts = caption_batch(indices.tolist(), names, config, rng)
        tokens = tokenizer(texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
        noisy, noise, timesteps, alpha = noised_batch(clean, alphas, generator)
        # A caption names one emoji, so its x0 is exact; an empty caption's ideal target is the mean over all.
        dropped = torch.tensor([text == "" for text in texts], device=device)
        if dropped.any():
            clean = clean.clone()
            clean[dropped] = posterior_mean(noisy[dropped], alpha[dropped], latents)
            noise = noise_for(noisy, clean, alpha)
        with autocast(device):
            hidden = text_encoder(tokens.input_ids.to(device))[0]
            prediction = unet(noisy, timesteps, encoder_hidden_states=hidden).sample
        loss = diffusion_loss(prediction, clean, noise, alpha, timesteps, alphas, config.min_snr_gamma, prediction_type)
        apply_gradients(loss, optimiser, parameters, max_norm=1.0)
        ema_unet.update(unet, step)
        ema_text.update(text_encoder, step)
        progress.update(1)
        progress.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
        sample_now = budget.samples_due(step, config.sample_every)
        if budget.checkpoint_due() or sample_now:
            export_and_save(sample_now)
    progress.close()
    export_and_save(sample=True)


def train(config: SDConfig) -> str:
    """Train the stages asked for, write sample grids and the fp16 export to `config.out`; return it."""
    from training.tokenizer import save_clip_tokenizer

    generator = seed_everything(config.seed)
    device = pick_device(config.device)
    dataset = load_dataset(config.data)
    images, names = images_to_tensor(dataset["images"]), list(dataset["names"])
    tokenizer = save_clip_tokenizer(os.path.join(config.out, "tokenizer"))
    vae = train_vae(config, images, device, generator)
    if config.stage != "vae":
        train_unet(config, vae, names, images, device, generator, tokenizer)
    return config.out


if __name__ == "__main__":
    print(train(parse_config(SDConfig, __doc__.splitlines()[0])))
