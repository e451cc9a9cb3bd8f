"""Train a small open_clip model contrastively on (emoji image, name) pairs; export it as a `local-dir:` folder.

    python training/train_clip.py --out models/emoji/clip                                  # the guiding CLIP
    python training/train_clip.py --out models/emoji/clip-score --seed 1 --vision-width 96 --text-width 48
                                                                                           # the scoring CLIP
    python training/train_clip.py --steps 3 --batch-size 8 --out /tmp/x                     # toy scale (CPU)

Two models trained with different seeds and widths: one guides, the other only scores text adherence, so a
benchmark never scores with the model that guided.
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
from training.common import images_to_tensor, parameter_count, parse_config, pick_device, seed_everything  # noqa: E402

CAPTION_TEMPLATES = ("{}", "{} emoji", "an emoji of {}", "a picture of {}")
MEAN = STD = (0.5, 0.5, 0.5)


@dataclass
class ClipConfig:
    data: str = DEFAULT_OUT  # the .npz written by build_emoji_dataset.py
    out: str = "models/emoji/clip"  # the local-dir folder written
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


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random scale (0.8-1.0) and shift, white fill: CLIP guidance reads cutouts, so the model should too."""
    count = images.shape[0]
    draws = torch.rand(count, 3, generator=generator).to(images.device)
    scale = 0.8 + 0.2 * draws[:, 0]
    theta = torch.zeros(count, 2, 3, device=images.device)
    theta[:, 0, 0] = theta[:, 1, 1] = scale
    theta[:, :, 2] = (draws[:, 1:] * 2 - 1) * (1 - scale)[:, None]
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    # Shifted so that the zero padding lands on +1: white, the data set's background.
    return F.grid_sample(images - 1, grid, align_corners=False, padding_mode="zeros") + 1


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
    mean, std = torch.tensor(MEAN, device=device).view(1, 3, 1, 1), torch.tensor(STD, device=device).view(1, 3, 1, 1)
    print(f"{len(images)} pairs, {parameter_count(model) / 1e6:.2f}M parameters, device {device}")
    batch_size = min(config.batch_size, len(images))
    progress = tqdm(range(1, config.steps + 1), desc="clip")
    for step in progress:
        for group in optimiser.param_groups:
            group["lr"] = config.learning_rate * min(1.0, step / config.warmup)
        # Distinct names in a batch: a duplicate would be a false negative.
        indices = torch.randperm(len(images), generator=generator)[:batch_size]
        batch = augment(images[indices].to(device), generator)
        tokens = tokenizer(captions([names[i] for i in indices.tolist()], rng)).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            image_features, text_features, logit_scale = model(((batch + 1) / 2 - mean) / std, tokens)
        logits = logit_scale * image_features.float() @ text_features.float().T
        labels = torch.arange(len(logits), device=device)
        loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, 4.6052)  # temperature at most 100, as in CLIP
        accuracy = (logits.argmax(dim=1) == labels).float().mean().item()
        progress.set_postfix(loss=f"{loss.item():.3f}", acc=f"{accuracy:.2f}")
    return export(model.eval(), config)


if __name__ == "__main__":
    print(train(parse_config(ClipConfig, __doc__.splitlines()[0])))
