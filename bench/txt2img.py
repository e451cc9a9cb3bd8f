"""txt2img: our wrapper against the bare diffusers StableDiffusionPipeline on the same components, in one run.

    python bench/txt2img.py                  # tiny random SD components (CPU-friendly)
    python bench/txt2img.py --real-size      # SD 1.5-size components from the published configs, random weights
                                             # (512x512, 25 steps: for timing on a GPU)

Same components, seed, scheduler and steps on both rows; runs alternate (bare, wrapper, bare, ...) so drifts in
machine load hit both alike, and the median of each is reported.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from diffusers import StableDiffusionPipeline  # noqa: E402

from pipelines import stable_diffusion as sd  # noqa: E402
from pipelines.cache import MODELS  # noqa: E402
from pipelines.device import default_device, model_dtype  # noqa: E402
from tests.tiny_models import save_clip_tokenizer, tiny_sd_components  # noqa: E402


def sd15_components() -> dict:
    """Stable Diffusion 1.5 architecture (UNet, VAE, CLIP ViT-L/14 text encoder) with random weights."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=64,
        cross_attention_dim=768,
        attention_head_dim=8,
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
    )
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2,
        latent_channels=4,
        sample_size=512,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=768,
            intermediate_size=3072,
            num_attention_heads=12,
            num_hidden_layers=12,
            max_position_embeddings=77,
            hidden_act="quick_gelu",
            projection_dim=768,
            vocab_size=49408,
        )
    )
    from training.train_sd import build_scheduler

    scheduler = build_scheduler()  # SD 1.x's schedule
    return dict(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=save_clip_tokenizer(tempfile.mkdtemp()),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real-size", action="store_true", help="SD 1.5-size components (random weights)")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--size", type=int, default=None, help="image side (default: native, 64 tiny / 512 real)")
    parser.add_argument("--scheduler", default="DPM++ 2M Karras", choices=list(sd.SD_SCHEDULERS))
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per row, alternating")
    args = parser.parse_args()

    device = default_device()
    dtype = model_dtype(device)
    components = sd15_components() if args.real_size else tiny_sd_components()
    base = StableDiffusionPipeline(**components).to(device=device, dtype=dtype)
    if device.type == "cuda":
        base.unet.to(memory_format=torch.channels_last)
    base.set_progress_bar_config(disable=True)
    # The wrapper finds these components in its cache, exactly where it would keep the ones it loads.
    os.environ["SD_MODEL"] = "bench-components"
    MODELS.get(("sd", "bench-components", str(device)), lambda: base)
    size = args.size or base.unet.config.sample_size * base.vae_scale_factor
    prompt = "a watercolor painting of a fox in the snow"

    # The bare pipeline is built once, as a plain diffusers script would; the wrapper builds a fresh pipeline
    # object (shared weights, own scheduler) per request, so that overhead is counted against it.
    bare_pipeline = StableDiffusionPipeline(**dict(base.components, requires_safety_checker=False))
    bare_pipeline.scheduler = sd.SD_SCHEDULERS[args.scheduler](base.scheduler.config)
    bare_pipeline.set_progress_bar_config(disable=True)

    def bare() -> None:
        bare_pipeline(
            prompt,
            num_inference_steps=args.steps,
            width=size,
            height=size,
            generator=[torch.Generator().manual_seed(0)],
        )

    def wrapper() -> None:
        sd.generate_sd(
            sd.SDRequest(
                task="txt2img",
                prompt=prompt,
                scheduler=args.scheduler,
                steps=args.steps,
                width=size,
                height=size,
                seed=0,
            )
        )

    def timed(fn) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    bare(), wrapper()  # warm-up
    times = {"bare diffusers": [], "our wrapper": []}
    for _ in range(args.repeats):
        times["bare diffusers"].append(timed(bare))
        times["our wrapper"].append(timed(wrapper))
    medians = {name: statistics.median(values) for name, values in times.items()}
    name = "SD 1.5-size" if args.real_size else "tiny SD"
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"models: {name} (random weights), {str(dtype).removeprefix('torch.')}, device: {gpu}")
    print(f"{size}x{size}, {args.steps} steps, {args.scheduler}, seed 0, median of {args.repeats} alternating runs\n")
    print(f"| {'row':<16} | {'s / image':>10} | {'min':>8} | {'max':>8} |")
    print(f"|{'-' * 18}|{'-' * 12}|{'-' * 10}|{'-' * 10}|")
    for row, values in times.items():
        print(f"| {row:<16} | {medians[row]:>10.4f} | {min(values):>8.4f} | {max(values):>8.4f} |")
    overhead = medians["our wrapper"] / medians["bare diffusers"] - 1
    print(f"\nwrapper overhead: {overhead * 100:+.1f}% (target: at most +2%)")


if __name__ == "__main__":
    main()
