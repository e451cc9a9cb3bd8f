"""Make the guiding CLIP noise-aware: its image tower learns which emoji a noisy sample x_t of the bundled DDPM is
heading to, as CLIP guidance shows it that sample; the export says "noise_aware": true, so that pixel models' CLIP
guidance reads x_t (classifier guidance) instead of the predicted x0.

    python training/train_noise_aware_clip.py --minutes 40                 # from models/emoji/clip, in place
    python training/train_noise_aware_clip.py --steps 3 --batch-size 8 --out /tmp/x --checkpoints /tmp/c  # toy

The text tower stays frozen: every name's text embedding is a class, and the loss is the cross-entropy of the
image's cosines to all of them (log p(name | x_t) over the data set's names) against the exact posterior over the
data set's images given x_t (`--targets posterior`, the default: the Bayes-optimal noisy classifier's answer) or
the source's name (`--targets label`). Samples are the DDPM's forward process at t drawn mostly where a sample's
identity is decided (t 400-999: 70%; below 400: 15%; clean: 15%), seen as `guidance.ClipLoss` sees them: clamped
to [0, 1], one of its cutouts (the whole image or a random crop). Like every training script: `--minutes` budget,
checkpoints in `--checkpoints`, `--resume 1`.
"""

from __future__ import annotations

import json
import os
import shutil
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
    images_to_tensor,
    load_checkpoint,
    pick_device,
    restore_rng,
    rng_state,
    save_checkpoint,
    seed_everything,
)

HIGH_NOISE_FROM = 400  # t at and above which a sample's identity is being decided


@dataclass
class NoiseAwareConfig:
    data: str = DEFAULT_OUT  # the .npz written by build_emoji_dataset.py
    clip: str = "models/emoji/clip"  # the guiding CLIP to start from (a local-dir export)
    ddpm: str = "models/emoji/ddpm"  # the pixel model whose noise schedule and size guidance runs at
    out: str = "models/emoji/clip"  # the local-dir folder written
    checkpoints: str = "checkpoints/noise-aware-clip"  # git-ignored: last.pt, the full training state
    resume: bool = False
    minutes: float = 0.0
    checkpoint_minutes: float = 10.0
    steps: int = 20_000
    batch_size: int = 256
    learning_rate: float = 5e-4
    cuts: int = 4  # guidance's cutouts per image: a sample is seen as one of them, the first the whole image
    targets: str = "posterior"  # "posterior": p(name | x_t) over the data set (Bayes); "label": the source's name
    seed: int = 0
    device: str | None = None


def noise_levels(count: int, generator: torch.Generator) -> torch.Tensor:
    """Training timesteps: 70% in [HIGH_NOISE_FROM, 1000), 15% below, 15% clean (t = 0)."""
    draw = torch.rand(count, generator=generator)
    high = torch.randint(HIGH_NOISE_FROM, 1000, (count,), generator=generator)
    low = torch.randint(0, HIGH_NOISE_FROM, (count,), generator=generator)
    return torch.where(draw > 0.85, torch.zeros_like(high), torch.where(draw < 0.7, high, low))


def posterior(samples: torch.Tensor, clean: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """p(image j | x_t) for x_t = sqrt(a) x_j + sqrt(1 - a) noise, under a uniform prior over the data set's images:
    the Bayes-optimal noisy classifier's answer, whose gradient is classifier guidance's direction. A far less noisy
    target than the source's name where noise hides it (t above 700)."""
    flat, images = samples.flatten(1), clean.flatten(1)
    alpha = alpha.flatten()[:, None]
    squared = (flat**2).sum(1, keepdim=True) - 2 * alpha.sqrt() * flat @ images.T + alpha * (images**2).sum(1)[None]
    return torch.softmax(-squared / (2 * (1 - alpha)), dim=1)


def as_guidance_sees(
    samples: torch.Tensor, size: int, cuts: int, generator: torch.Generator, mean: torch.Tensor, std: torch.Tensor
) -> torch.Tensor:
    """Samples in the DDPM's space seen as ClipLoss sees them: clamped to [0, 1], one cutout each (the whole image
    for a 1/cuts share), at the CLIP's input size, normalised."""
    from guidance.clip import make_cutouts

    images = ((samples + 1) / 2).clamp(0, 1)
    seeds = torch.randint(0, 2**31, (len(images),), generator=generator).tolist()
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    every_cut = make_cutouts(images, size, cuts, generators).view(len(images), cuts, *images.shape[1:2], size, size)
    chosen = torch.randint(0, cuts, (len(images),), generator=generator)
    return (every_cut[torch.arange(len(images)), chosen] - mean) / std


def export(model: torch.nn.Module, config: NoiseAwareConfig) -> str:
    """Write the model as fp16 safetensors beside the source's open_clip_config.json, marked noise-aware."""
    from safetensors.torch import save_file

    os.makedirs(config.out, exist_ok=True)
    source = os.path.join(config.clip, "open_clip_config.json")
    with open(source) as handle:
        settings = json.load(handle)
    settings["noise_aware"] = True
    target = os.path.join(config.out, "open_clip_config.json")
    if os.path.abspath(source) != os.path.abspath(target):
        shutil.copyfile(source, target)
    with open(target, "w") as handle:
        json.dump(settings, handle, indent=2)
    state = {name: value.detach().half().contiguous() for name, value in model.state_dict().items()}
    save_file(state, os.path.join(config.out, "open_clip_model.safetensors"))
    return config.out


def train(config: NoiseAwareConfig) -> str:
    """Cross-entropy of noisy samples against every name's frozen text embedding; export to `config.out`."""
    from diffusers import DDPMScheduler

    from pipelines.clip import load_clip

    generator = seed_everything(config.seed)
    device = pick_device(config.device)
    dataset = load_dataset(config.data)
    names = [str(name) for name in dataset["names"]]
    scheduler = DDPMScheduler.from_pretrained(config.ddpm, subfolder="scheduler")
    side = json.load(open(os.path.join(config.ddpm, "unet", "config.json")))["sample_size"]
    clean = F.interpolate(images_to_tensor(dataset["images"]), size=(side, side), mode="area").to(device)
    alphas = scheduler.alphas_cumprod.float().to(device)
    clip = load_clip(f"local-dir:{os.path.abspath(config.clip)}", None, torch.device("cpu"))
    model = clip.model.float().to(device).requires_grad_(False)
    model.visual.requires_grad_(True)
    optimiser = torch.optim.AdamW(model.visual.parameters(), lr=config.learning_rate, weight_decay=0.05)
    step = 0
    state = load_checkpoint(config.checkpoints) if config.resume else None
    if state is not None:
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        step = state["step"]
        restore_rng(state["rng"], generator)
        print(f"resumed from {config.checkpoints} at step {step}")
    with torch.no_grad():
        tokens = clip.tokenizer(names)
        texts = torch.cat([model.encode_text(tokens[i : i + 512].to(device)) for i in range(0, len(names), 512)])
    texts = F.normalize(texts.float(), dim=-1)
    scale = model.logit_scale.exp().item()
    mean = torch.tensor(clip.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(clip.std, device=device).view(1, 3, 1, 1)
    budget = Budget(config.minutes, config.checkpoint_minutes, sample_minutes=float("inf"))
    print(f"{len(names)} names, {side} px samples, device {device}")

    def save_all() -> None:
        state = {"model": model.state_dict(), "optimiser": optimiser.state_dict(), "step": step}
        save_checkpoint(config.checkpoints, {**state, "rng": rng_state(generator)})
        export(model, config)

    model.visual.train()
    progress = tqdm(total=config.steps, initial=step, desc="noise-aware clip", mininterval=30)
    while step < config.steps and not budget.expired():
        step += 1
        labels = torch.randint(0, len(names), (config.batch_size,), generator=generator).to(device)
        alpha = alphas[noise_levels(config.batch_size, generator).to(device)].view(-1, 1, 1, 1)
        noise = torch.randn(clean[labels].shape, generator=generator).to(device)
        samples = alpha.sqrt() * clean[labels] + (1 - alpha).sqrt() * noise
        seen = as_guidance_sees(samples, clip.image_size, config.cuts, generator, mean, std)
        features = F.normalize(model.encode_image(seen).float(), dim=-1)
        logits = scale * features @ texts.T
        if config.targets == "posterior":
            loss = F.cross_entropy(logits, posterior(samples, clean, alpha))
        else:
            loss = F.cross_entropy(logits, labels)
        apply_gradients(loss, optimiser)
        progress.update(1)
        progress.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        if budget.checkpoint_due():
            save_all()
    progress.close()
    model.eval()
    save_all()
    return config.out


if __name__ == "__main__":
    from training.common import parse_config

    print(train(parse_config(NoiseAwareConfig, __doc__.splitlines()[0])))
