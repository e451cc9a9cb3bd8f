"""Seconds per image for unguided, color-guided and CLIP-guided sampling, and our CLIP guidance vs the course loop.

One command, one run, same seed, steps and starting noise on every row:

    python bench/benchmark.py                 # tiny random models (CPU-friendly)
    python bench/benchmark.py --real-size     # celebahq-256 UNet + ViT-B-32 from their published configs,
                                              # random weights (for timing on a GPU)

The "course loop" row reproduces the Hugging Face diffusion course (unit 2) CLIP guidance: one CLIP forward and
backward per cutout (torchvision RandomResizedCrop/RandomAffine/RandomHorizontalFlip on the whole image), x0 from
a second `scheduler.step` call, and the gradient applied to x before stepping.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from diffusers import DDIMScheduler, UNet2DModel  # noqa: E402
from diffusers.utils.torch_utils import randn_tensor  # noqa: E402

from guidance import ClipLoss, ColorLoss, GuidanceTerm, guided_sample, spherical_distance  # noqa: E402
from pipelines.unconditional import DEFAULT_CLIP_SCALE, DEFAULT_COLOR_SCALE, seeded_generators  # noqa: E402

# google/ddpm-celebahq-256 unet/config.json (the published config), built here with random weights.
CELEBAHQ_UNET_CONFIG = dict(
    sample_size=256,
    in_channels=3,
    out_channels=3,
    layers_per_block=2,
    block_out_channels=(128, 128, 256, 256, 512, 512),
    down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"),
    act_fn="silu",
    attention_head_dim=None,
    center_input_sample=False,
    downsample_padding=1,
    flip_sin_to_cos=False,
    freq_shift=1,
    mid_block_scale_factor=1,
    norm_eps=1e-6,
    norm_num_groups=32,
    time_embedding_type="positional",
)
ORANGE = (1.0, 0.53, 0.0)


def build_models(real_size: bool, device: torch.device, dtype: torch.dtype):
    """(unet, clip_model, clip_image_size): random weights, real or tiny architecture."""
    import open_clip

    from tests.tiny_models import tiny_clip, tiny_unet

    torch.manual_seed(0)
    if real_size:
        unet = UNet2DModel(**CELEBAHQ_UNET_CONFIG)
        clip_model = open_clip.create_model("ViT-B-32", pretrained=None)
        clip_size = 224
    else:
        unet, clip_model, clip_size = tiny_unet(), tiny_clip(), 64
    unet = unet.to(device=device, dtype=dtype).eval().requires_grad_(False)
    clip_model = clip_model.to(device=device, dtype=dtype).eval().requires_grad_(False)
    return unet, clip_model, clip_size


def scheduler():
    """The celebahq scheduler config, as DDIM."""
    return DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=True)


def noise_for(unet, batch: int, seed: int, device) -> tuple[torch.Tensor, list[torch.Generator]]:
    """Starting noise for `batch` images of seeds seed..seed+batch-1."""
    size = unet.config.sample_size
    generators = seeded_generators(seed, batch)
    return randn_tensor((batch, 3, size, size), generator=generators, device=device, dtype=torch.float32), generators


def course_clip_loop(unet, clip_model, clip_size, text_embeds, noise, steps, cuts, scale) -> torch.Tensor:
    """The course's CLIP-guided loop: per-cutout CLIP forward/backward, two scheduler.step calls per step."""
    import torchvision.transforms as T

    tfms = T.Compose(
        [
            T.RandomResizedCrop(clip_size),
            T.RandomAffine(5),
            T.RandomHorizontalFlip(),
            T.Normalize(mean=(0.48145466, 0.4578275, 0.40821073), std=(0.26862954, 0.26130258, 0.27577711)),
        ]
    )
    dtype = next(clip_model.parameters()).dtype

    def clip_loss(image):
        image_features = clip_model.encode_image(tfms(image).to(dtype))
        return spherical_distance(image_features, text_embeds).mean()

    sched = scheduler()
    sched.set_timesteps(steps)
    x = noise.clone()
    for i, t in enumerate(sched.timesteps):
        model_input = sched.scale_model_input(x, t)
        with torch.no_grad():
            noise_pred = unet(model_input.to(unet.dtype), t).sample.float()
        cond_grad = 0
        for _ in range(cuts):
            x = x.detach().requires_grad_()
            x0 = sched.step(noise_pred, t, x).pred_original_sample
            loss = clip_loss((x0 + 1) / 2) * scale
            cond_grad -= torch.autograd.grad(loss, x)[0] / cuts
        alpha_bar = sched.alphas_cumprod[i]
        x = x.detach() + cond_grad * alpha_bar.sqrt()
        # The course's second step call on the same timestep (its step counter is harmless for DDIM).
        x = sched.step(noise_pred, t, x).prev_sample
    return x


def timed(fn, device, repeats: int) -> float:
    """Best wall time of `repeats` runs after one warm-up, synchronising the device."""

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    fn()
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real-size", action="store_true", help="celebahq-256 UNet and ViT-B-32 (random weights)")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default 20 tiny, 10 real-size)")
    parser.add_argument("--batch", type=int, default=1, help="images per run")
    parser.add_argument("--cuts", type=int, default=4, help="CLIP cutouts per image")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per row (best is reported)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    args = parser.parse_args()

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    steps = args.steps or (10 if args.real_size else 20)
    torch.set_grad_enabled(True)
    unet, clip_model, clip_size = build_models(args.real_size, device, dtype)
    embed_dim = clip_model.text_projection.shape[-1] if hasattr(clip_model, "text_projection") else 32
    text_embeds = torch.randn(1, embed_dim, generator=torch.Generator().manual_seed(1)).to(device)
    noise, _ = noise_for(unet, args.batch, 0, device)
    mean, std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)

    def ours(terms_factory):
        def run():
            generators = seeded_generators(0, args.batch)
            guided_sample(unet, scheduler(), noise.clone(), steps, terms_factory(), generator=generators)

        return run

    color = lambda: [GuidanceTerm("color", ColorLoss(ORANGE), DEFAULT_COLOR_SCALE)]  # noqa: E731
    clip = lambda: [  # noqa: E731
        GuidanceTerm(
            "clip",
            ClipLoss(clip_model, text_embeds, args.cuts, seeded_generators(2**40, args.batch), clip_size, mean, std),
            DEFAULT_CLIP_SCALE,
        )
    ]
    rows = {
        "unguided": timed(ours(lambda: []), device, args.repeats),
        "color-guided": timed(ours(color), device, args.repeats),
        f"CLIP-guided ({args.cuts} cutouts, ours)": timed(ours(clip), device, args.repeats),
        f"CLIP-guided ({args.cuts} cutouts, course loop)": timed(
            lambda: course_clip_loop(
                unet, clip_model, clip_size, text_embeds, noise, steps, args.cuts, DEFAULT_CLIP_SCALE
            ),
            device,
            args.repeats,
        ),
    }
    base = rows["unguided"]
    name = "celebahq-256 UNet + ViT-B-32" if args.real_size else "tiny UNet 32px + tiny CLIP"
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"models: {name} (random weights), {str(dtype).removeprefix('torch.')}, device: {gpu}")
    print(f"steps: {steps}, batch: {args.batch}, seed: 0, best of {args.repeats}\n")
    print(f"| {'row':<40} | {'s / image':>10} | {'x unguided':>10} |")
    print(f"|{'-' * 42}|{'-' * 12}|{'-' * 12}|")
    for label, seconds in rows.items():
        print(f"| {label:<40} | {seconds / args.batch:>10.4f} | {seconds / base:>10.2f} |")
    ours_clip = rows[f"CLIP-guided ({args.cuts} cutouts, ours)"]
    course = rows[f"CLIP-guided ({args.cuts} cutouts, course loop)"]
    print(f"\nours vs course loop (CLIP, {args.cuts} cutouts): {course / ours_clip:.2f}x faster per image")


if __name__ == "__main__":
    main()
