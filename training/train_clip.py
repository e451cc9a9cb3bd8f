"""Train a small open_clip model contrastively on (emoji image, name) pairs; export it as a `local-dir:` folder.

    python training/train_clip.py --out models/emoji/clip                                  # the guiding CLIP
    python training/train_clip.py --out models/emoji/clip-score --seed 1 --vision-width 96 --text-width 48
                                                                                           # the scoring CLIP
    python training/train_clip.py --steps 3 --batch-size 8 --out /tmp/x --checkpoints /tmp/c  # toy scale (CPU)

Two models trained with different seeds and widths: one guides, the other only scores text adherence, so a
benchmark never scores with the model that guided. Both see every image at 64, 32 and 16 pixels (resampled back to
64), since they judge images of the 32x32 models and blurry predicted clean images mid-sampling; the guiding one
also sees noised images. Like every training script: `--minutes` budget, checkpoints in `--checkpoints`,
`--resume 1`.
"""

from __future__ import annotations

import json
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
    Budget,
    apply_gradients,
    autocast,
    images_to_tensor,
    load_checkpoint,
    parameter_count,
    parse_config,
    pick_device,
    restore_rng,
    rng_state,
    save_checkpoint,
    seed_everything,
    warmup_lr,
)

CAPTION_TEMPLATES = ("{}", "{} emoji", "an emoji of {}", "a picture of {}")
MEAN = STD = (0.5, 0.5, 0.5)


@dataclass
class ClipConfig:
    data: str = DEFAULT_OUT  # the .npz written by build_emoji_dataset.py
    out: str = "models/emoji/clip"  # the local-dir folder written
    checkpoints: str = "checkpoints/clip"  # git-ignored: last.pt, the full training state
    resume: bool = False  # continue from `checkpoints`
    minutes: float = 0.0  # wall-clock budget of this invocation (0: none)
    checkpoint_minutes: float = 10.0
    steps: int = 6_000
    batch_size: int = 256
    learning_rate: float = 1e-3
    warmup: int = 300
    embed_dim: int = 64
    vision_width: int = 128
    vision_layers: int = 4
    text_width: int = 64
    text_layers: int = 4
    context_length: int = 32  # emoji names are short
    noise_augment: float = 0.0  # share of images noised like a diffusion model's x_t (for the guiding CLIP)
    low_resolutions: tuple[int, ...] = (2, 4)  # also show images at size/2 and size/4 (resampled back)
    junk_share: float = 0.0  # extra blurred blends of emoji per batch, taught to match `junk_caption` (scoring CLIP)
    junk_caption: str = "a blurry smudge"
    junk_blobs: float = 0.0  # share of the junk that is single emoji shrunk to 4 or 8 px and resampled back
    junk_noise: float = 0.0  # share of the junk that is uniform noise drawn at 8-64 px and resampled
    junk_separation: float = 0.0  # weight of the loss that pushes junk embeddings to cosine <= 0 with every emoji's
    seed: int = 0
    device: str | None = None


def model_config(config: ClipConfig) -> dict:
    """The open_clip `model_cfg` for these sizes (64x64 images, 8x8 patches, the standard 49408-token vocabulary)."""
    return {
        "embed_dim": config.embed_dim,
        "vision_cfg": {
            "image_size": 64,
            "patch_size": 8,
            "width": config.vision_width,
            "layers": config.vision_layers,
            "head_width": 32,
        },
        "text_cfg": {
            "context_length": config.context_length,
            "vocab_size": 49408,
            "width": config.text_width,
            "heads": max(1, config.text_width // 32),
            "layers": config.text_layers,
        },
    }


def augment(
    images: torch.Tensor,
    generator: torch.Generator,
    noise_share: float = 0.0,
    low_resolutions: tuple[int, ...] = (2, 4),
) -> torch.Tensor:
    """Random scale (0.8-1.0) and shift with white fill (CLIP guidance reads cutouts), random resolution (full, or
    size // d for each d in `low_resolutions`, resampled back) and, for a share `noise_share` of images, Gaussian
    noise of a random level."""
    count = images.shape[0]
    draws = torch.rand(count, 5, generator=generator).to(images.device)
    scale = 0.8 + 0.2 * draws[:, 0]
    theta = torch.zeros(count, 2, 3, device=images.device)
    theta[:, 0, 0] = theta[:, 1, 1] = scale
    theta[:, :, 2] = (draws[:, 1:3] * 2 - 1) * (1 - scale)[:, None]
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    # Shifted so that the zero padding lands on +1: white, the data set's background.
    images = F.grid_sample(images - 1, grid, align_corners=False, padding_mode="zeros") + 1
    size = images.shape[-1]
    # A third of the images at size // first divisor, a sixth at size // second, the rest at full resolution.
    for divisor, (start, stop) in zip(low_resolutions, ((1 / 3, 2 / 3), (2 / 3, 5 / 6))):
        low = size // divisor
        chosen = (draws[:, 3] >= start) & (draws[:, 3] < stop)
        if chosen.any():
            small = F.interpolate(images[chosen], size=(low, low), mode="area")
            images[chosen] = F.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)
    noised = draws[:, 4] < noise_share
    if noised.any():
        level = torch.rand(int(noised.sum()), 1, 1, 1, generator=generator).to(images.device) * 0.5
        noise = torch.randn(images[noised].shape, generator=generator).to(images.device)
        images[noised] = images[noised] + level * noise
    return images


def junk_images(images: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """Blurred, noised blends of 2-8 random emoji: what an undertrained denoiser predicts, and not an emoji.

    The scoring CLIP learns to tell these from real emoji, so that precision/recall in its space can see blobs
    (a CLIP trained only on names learns colour and is blind to them)."""
    count_images, _, size, _ = images.shape
    picks = torch.rand(count, count_images, generator=generator).argsort(dim=1)[:, :8]  # 8 distinct images each
    members = torch.randint(2, 9, (count, 1), generator=generator)
    logits = torch.randn(count, 8, generator=generator)
    logits[torch.arange(8)[None, :] >= members] = float("-inf")
    # Half softmax, half uniform: no member weighs more than 3/4, so a blend is never one sharp emoji.
    weights = (0.5 * logits.softmax(dim=1) + 0.5 / members * (logits > float("-inf"))).to(images.device)
    blends = torch.einsum("nk,nkchw->nchw", weights, images[picks.to(images.device)])
    sigmas = torch.rand(count, generator=generator) * 3.0
    radius = 6
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernels = torch.exp(-(offsets[None, :] ** 2) / (2 * sigmas[:, None].clamp(min=0.3) ** 2))
    kernels = (kernels / kernels.sum(dim=1, keepdim=True)).to(images.device)
    padded = F.pad(blends, (radius, radius, radius, radius), mode="replicate")
    channels = padded.reshape(1, count * 3, size + 2 * radius, size + 2 * radius)
    horizontal = kernels.repeat_interleave(3, dim=0)[:, None, None, :]
    vertical = kernels.repeat_interleave(3, dim=0)[:, None, :, None]
    blurred = F.conv2d(F.conv2d(channels, horizontal, groups=count * 3), vertical, groups=count * 3)
    blurred = blurred.reshape(count, 3, size, size)
    level = torch.rand(count, 1, 1, 1, generator=generator).to(images.device) * 0.2
    return (blurred + level * torch.randn(blurred.shape, generator=generator).to(images.device)).clamp(-1, 1)


def low_resolution_junk(
    images: torch.Tensor, count: int, generator: torch.Generator, sizes: tuple[int, ...] = (4, 8)
) -> torch.Tensor:
    """`count` distinct emoji area-downsampled to one of `sizes` pixels and resampled back (bicubic, as the app
    shows small images): the colour blobs of an undertrained DDPM, which no one would call an emoji."""
    picks = torch.randperm(len(images), generator=generator)[:count].to(images.device)
    chosen = torch.randint(len(sizes), (count,), generator=generator).to(images.device)
    blobs = images[picks].clone()
    for index, low in enumerate(sizes):
        selected = chosen == index
        if selected.any():
            small = F.interpolate(blobs[selected], size=(low, low), mode="area")
            blobs[selected] = F.interpolate(small, size=images.shape[-2:], mode="bicubic", align_corners=False)
    return blobs.clamp(-1, 1)


def noise_junk(count: int, size: int, generator: torch.Generator, sides: tuple[int, ...] = (8, 16, 32, 64)):
    """`count` images of uniform noise in [-1, 1], each drawn at one of `sides` pixels and resampled to `size`: what a
    diverged or barely trained model puts out."""
    chosen = torch.randint(len(sides), (count,), generator=generator)
    noise = torch.empty(count, 3, size, size)
    for index, side in enumerate(sides):
        selected = chosen == index
        if selected.any():
            drawn = torch.rand(int(selected.sum()), 3, side, side, generator=generator) * 2 - 1
            noise[selected] = F.interpolate(drawn, size=(size, size), mode="bicubic", align_corners=False)
    return noise.clamp(-1, 1)


def separation_loss(real_features: torch.Tensor, junk_features: torch.Tensor) -> torch.Tensor:
    """Mean positive cosine between junk and real image embeddings (both L2-normalised).

    Contrast against the junk caption alone leaves junk near the middle of the emoji embeddings, inside every
    k-NN ball of precision/recall; this puts it on the far side of them."""
    return F.relu(junk_features.float() @ real_features.float().T).mean()


def captions(names, rng: random.Random) -> list[str]:
    """One caption per name from a random template."""
    return [rng.choice(CAPTION_TEMPLATES).format(name) for name in names]


def export(model, config: ClipConfig) -> str:
    """Write open_clip_config.json and fp16 safetensors weights: loadable with `local-dir:<out>`."""
    from safetensors.torch import save_file

    os.makedirs(config.out, exist_ok=True)
    with open(os.path.join(config.out, "open_clip_config.json"), "w") as handle:
        json.dump({"model_cfg": model_config(config), "preprocess_cfg": {"mean": MEAN, "std": STD}}, handle, indent=2)
    state = {name: value.detach().half().contiguous() for name, value in model.state_dict().items()}
    save_file(state, os.path.join(config.out, "open_clip_model.safetensors"))
    return config.out


def train(config: ClipConfig) -> str:
    """Contrastive training (symmetric InfoNCE, learnable temperature); export to `config.out`."""
    import open_clip

    generator = seed_everything(config.seed)
    rng = random.Random(config.seed)
    device = pick_device(config.device)
    dataset = load_dataset(config.data)
    images, names = images_to_tensor(dataset["images"]), list(dataset["names"])
    model = open_clip.CLIP(**model_config(config)).to(device)
    tokenizer = open_clip.SimpleTokenizer(context_length=config.context_length)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=0.1)
    step = 0
    state = load_checkpoint(config.checkpoints) if config.resume else None
    if state is not None:
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        step = state["step"]
        restore_rng(state["rng"], generator)
        rng.setstate(state["captions_rng"])
        print(f"resumed from {config.checkpoints} at step {step}")
    mean, std = torch.tensor(MEAN, device=device).view(1, 3, 1, 1), torch.tensor(STD, device=device).view(1, 3, 1, 1)
    print(f"{len(images)} pairs, {parameter_count(model) / 1e6:.2f}M parameters, device {device}")
    batch_size = min(config.batch_size, len(images))
    budget = Budget(config.minutes, config.checkpoint_minutes, sample_minutes=float("inf"))

    def save_all() -> None:
        state = {"model": model.state_dict(), "optimiser": optimiser.state_dict(), "step": step}
        save_checkpoint(config.checkpoints, {**state, "rng": rng_state(generator), "captions_rng": rng.getstate()})
        export(model.eval(), config)
        model.train()

    progress = tqdm(total=config.steps, initial=step, desc="clip", mininterval=30)
    while step < config.steps and not budget.expired():
        step += 1
        warmup_lr(optimiser, config.learning_rate, step, config.warmup)
        # Distinct names in a batch: a duplicate would be a false negative.
        indices = torch.randperm(len(images), generator=generator)[:batch_size]
        batch = augment(images[indices].to(device), generator, config.noise_augment, tuple(config.low_resolutions))
        texts = captions([names[i] for i in indices.tolist()], rng)
        junk_count = round(config.junk_share * len(indices))
        if junk_count:
            blob_count = round(config.junk_blobs * junk_count)
            noise_count = round(config.junk_noise * junk_count)
            junk = [junk_images(images.to(device), junk_count - blob_count - noise_count, generator)]
            if blob_count:
                junk.append(low_resolution_junk(images.to(device), blob_count, generator))
            if noise_count:
                junk.append(noise_junk(noise_count, images.shape[-1], generator).to(device))
            batch = torch.cat([batch, *junk])
            texts.append(config.junk_caption)
        tokens = tokenizer(texts).to(device)
        with autocast(device):
            image_features, text_features, logit_scale = model(((batch + 1) / 2 - mean) / std, tokens)
        logits = logit_scale * image_features.float() @ text_features.float().T
        real = len(indices)
        # Junk images' label is the junk caption (the last column); text-to-image runs over the real images only.
        labels = torch.cat([torch.arange(real), torch.full((junk_count,), real)]).to(device)
        loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits[:real, :real].T, labels[:real])) / 2
        if junk_count and config.junk_separation:
            loss = loss + config.junk_separation * separation_loss(image_features[:real], image_features[real:])
        apply_gradients(loss, optimiser)
        with torch.no_grad():
            model.logit_scale.clamp_(0, 4.6052)  # temperature at most 100, as in CLIP
        accuracy = (logits.argmax(dim=1) == labels).float().mean().item()
        progress.update(1)
        progress.set_postfix(loss=f"{loss.item():.3f}", acc=f"{accuracy:.2f}", refresh=False)
        if budget.checkpoint_due():
            save_all()
    progress.close()
    save_all()
    return config.out


if __name__ == "__main__":
    print(train(parse_config(ClipConfig, __doc__.splitlines()[0])))
