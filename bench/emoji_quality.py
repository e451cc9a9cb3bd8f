"""Quality and speed bars of the bundled emoji models, measured in one run.

    python bench/emoji_quality.py                      # the bundled models (models/emoji)
    python bench/emoji_quality.py --bundle DIR --docs docs/   # another bundle; also write the sample grid

Bars (issue 4): txt2img images ranked first among the 20 names below by the *scoring* CLIP (never the guiding
one) at least half the time; color guidance at least halves the distance to the target versus strength 0 on the
same seeds; on CPU a batch of 4 unconditional images at 25 steps and one txt2img image at 25 steps each under 3 s.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

# Twenty emoji names (from the data set) spanning faces, hearts, food, animals and objects.
NAMES = [
    "grinning face",
    "red heart",
    "pizza",
    "dog face",
    "cat face",
    "banana",
    "fire",
    "star",
    "ghost",
    "sun",
    "snowman",
    "rocket",
    "frog",
    "pile of poo",
    "blue heart",
    "strawberry",
    "crying face",
    "penguin",
    "birthday cake",
    "tomato",
]
TARGET = "#1e90ff"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default=None, help="bundled models folder (default: models/emoji)")
    parser.add_argument("--images-per-name", type=int, default=4)
    parser.add_argument("--docs", default=None, help="write the 16-sample unconditional grid into this folder")
    args = parser.parse_args()
    if args.bundle:
        os.environ["BUNDLED_MODELS_DIR"] = args.bundle

    from guidance import color_distance, parse_color
    from pipelines import stable_diffusion as sd
    from pipelines import unconditional as uncond
    from pipelines.bundled import BUNDLED_LABEL, bundled_path
    from pipelines.clip import load_clip
    from training.common import save_grid

    missing = [name for name in ("ddpm", "clip", "clip-score", "sd") if bundled_path(name) is None]
    if missing:
        sys.exit(f"bundled weights missing: {', '.join(missing)} (train them with training/, see README)")
    os.environ["UNCOND_MODELS"] = os.environ.get("UNCOND_MODELS", "") or "none"
    to_array = lambda images: np.stack([np.asarray(image) for image in images])  # noqa: E731

    # 1. Unconditional samples and the CPU timing of a batch of 4 at 25 steps.
    request = uncond.SamplingRequest(model=BUNDLED_LABEL, steps=25, batch_size=4, seed=0)
    uncond.generate(request)  # load and warm up
    started = time.perf_counter()
    uncond.generate(request)
    uncond_seconds = time.perf_counter() - started
    samples = [
        image
        for seed in (0, 4, 8, 12)
        for image in uncond.generate(
            uncond.SamplingRequest(model=BUNDLED_LABEL, steps=50, batch_size=4, seed=seed)
        ).images
    ]
    if args.docs:
        print("grid:", save_grid(to_array(samples), os.path.join(args.docs, "emoji_samples.png"), columns=8))

    # 2. Color guidance toward one target on the same seeds.
    target = parse_color(TARGET)
    distances = {}
    for scale in (0.0, uncond.DEFAULT_COLOR_SCALE):
        images = uncond.generate(
            uncond.SamplingRequest(
                model=BUNDLED_LABEL, steps=25, batch_size=8, seed=100, color=TARGET, color_scale=scale
            )
        ).images
        pixels = torch.from_numpy(to_array(images)).permute(0, 3, 1, 2).float() / 255
        distances[scale] = color_distance(pixels, target).mean().item()

    # 3. txt2img adherence, scored by the second CLIP, and the CPU timing of one image at 25 steps.
    scorer = load_clip(f"local-dir:{bundled_path('clip-score')}", None, torch.device("cpu"))
    with torch.no_grad():
        text = torch.nn.functional.normalize(torch.cat([scorer.encode_text(name) for name in NAMES]), dim=-1)
    hits, total = 0, 0
    for index, name in enumerate(NAMES):
        result = sd.generate_sd(
            sd.SDRequest(
                task="txt2img",
                model=BUNDLED_LABEL,
                prompt=name,
                steps=25,
                batch_size=args.images_per_name,
                seed=1000 + 10 * index,
            )
        )
        pixels = torch.from_numpy(to_array(result.images)).permute(0, 3, 1, 2).float() / 255
        mean, std = torch.tensor(scorer.mean).view(1, 3, 1, 1), torch.tensor(scorer.std).view(1, 3, 1, 1)
        with torch.no_grad():
            image = torch.nn.functional.normalize(scorer.model.encode_image((pixels - mean) / std).float(), dim=-1)
        hits += int((image @ text.T).argmax(dim=1).eq(index).sum())
        total += len(result.images)
    one = sd.SDRequest(task="txt2img", model=BUNDLED_LABEL, prompt="red heart", steps=25, seed=0)
    started = time.perf_counter()
    sd.generate_sd(one)
    txt2img_seconds = time.perf_counter() - started

    device = "CPU" if not torch.cuda.is_available() else torch.cuda.get_device_name()
    print(f"device: {device}, {torch.get_num_threads()} threads\n")
    print("| bar | measured | target |")
    print("|---|---|---|")
    print(f"| txt2img ranked first of 20 by the scoring CLIP | {hits}/{total} = {hits / total:.0%} | >= 50% |")
    ratio = distances[uncond.DEFAULT_COLOR_SCALE] / distances[0.0]
    print(
        f"| color distance to {TARGET}, strength {uncond.DEFAULT_COLOR_SCALE:g} vs 0 | "
        f"{distances[uncond.DEFAULT_COLOR_SCALE]:.3f} vs {distances[0.0]:.3f} (x{ratio:.2f}) | <= x0.50 |"
    )
    print(f"| unconditional, batch of 4, 25 steps | {uncond_seconds:.2f} s | < 3 s on 2 CPU cores |")
    print(f"| txt2img, 1 image, 25 steps | {txt2img_seconds:.2f} s | < 3 s on 2 CPU cores |")


if __name__ == "__main__":
    main()
