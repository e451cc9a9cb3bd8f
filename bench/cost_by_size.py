"""Seconds of one UNet step (with classifier-free guidance) and one VAE decode and encode of the bundled Stable
Diffusion model at each size given, on this machine's CPU: what the compute limits' size factor is fitted to
(docs/limits.md). Usage: python bench/cost_by_size.py 64 128 256 384 512 [--threads 2]"""

from __future__ import annotations

import argparse
import os
import time

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models", "emoji", "sd")


def timed(run, repeats: int) -> float:
    """Mean seconds of `run()` over `repeats` calls, after one warm-up call."""
    run()
    start = time.perf_counter()
    for _ in range(repeats):
        run()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("sizes", nargs="+", type=int)
    parser.add_argument("--threads", type=int, default=2)
    arguments = parser.parse_args()
    torch.set_num_threads(arguments.threads)
    unet = UNet2DConditionModel.from_pretrained(os.path.join(ROOT, "unet")).float().eval()
    vae = AutoencoderKL.from_pretrained(os.path.join(ROOT, "vae")).float().eval()
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    context = torch.zeros(2, 77, unet.config.cross_attention_dim)
    with torch.no_grad():
        for size in arguments.sizes:
            latents, image = torch.randn(2, 4, size // factor, size // factor), torch.randn(1, 3, size, size)
            repeats = 3 if size <= 256 else 1
            step = timed(lambda: unet(latents, 10, encoder_hidden_states=context), repeats)
            decode = timed(lambda: vae.decode(latents[:1]), repeats)
            encode = timed(lambda: vae.encode(image), repeats)
            print(f"{size}: UNet step (CFG) {step:.3f} s, VAE decode {decode:.3f} s, encode {encode:.3f} s", flush=True)


if __name__ == "__main__":
    main()
