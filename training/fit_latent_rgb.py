"""Fit the cheap latent-to-RGB map of a Stable Diffusion checkpoint's VAE by least squares, and ship it beside it.

    python training/fit_latent_rgb.py                       # the bundled emoji SD model, on the emoji data set
    python training/fit_latent_rgb.py --model DIR --data data/emoji64.npz

Pairs: each data-set image's scaled latents (the VAE encoder's mean x scaling_factor, the diffusion model's space)
and the image area-downsampled to the latent size, in [-1, 1]. The fit uses every other image; the rest measure
it (RMS error in [-1, 1] units, and the error of each image's mean colour, which is what color guidance sees).
Writes `latent_rgb.json` into the model folder, with the decoder color guidance should use there by default.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from guidance.latent_rgb import FILE_NAME, fit_latent_rgb  # noqa: E402

DEFAULT_MODEL = os.path.join("models", "emoji", "sd")


@torch.no_grad()
def latent_image_pairs(vae, images: torch.Tensor, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """(scaled latents, images area-downsampled to the latent size) of images (N, 3, H, W) in [-1, 1]."""
    latents = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size].to(vae.dtype)
        latents.append(vae.encode(batch).latent_dist.mean.float() * vae.config.scaling_factor)
    latents = torch.cat(latents)
    targets = torch.nn.functional.interpolate(images.float(), size=latents.shape[-2:], mode="area")
    return latents, targets


def main() -> None:
    from diffusers import AutoencoderKL

    from training.build_emoji_dataset import DEFAULT_OUT, load_dataset

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="a diffusers SD folder with a vae/ subfolder")
    parser.add_argument("--data", default=DEFAULT_OUT, help="the emoji data set (.npz from build_emoji_dataset.py)")
    parser.add_argument(
        "--color-decoder",
        choices=("cheap", "vae"),
        default="cheap",
        help="what color guidance should see by default on this model (recorded in the file; measure it first)",
    )
    parser.add_argument("--why", default="", help="the measurement behind --color-decoder, recorded beside it")
    args = parser.parse_args()
    vae = AutoencoderKL.from_pretrained(args.model, subfolder="vae").float().eval()
    pixels = torch.from_numpy(load_dataset(args.data)["images"]).permute(0, 3, 1, 2).float() / 127.5 - 1
    latents, targets = latent_image_pairs(vae, pixels)
    source = f"least squares on {len(pixels[::2])} emoji (training/fit_latent_rgb.py)"
    latent_rgb, fit_rmse = fit_latent_rgb(latents[::2], targets[::2], source)
    held_out = latent_rgb(latents[1::2])
    rmse = (held_out - targets[1::2]).pow(2).mean().sqrt().item()
    mean_colour_error = (held_out.mean(dim=(2, 3)) - targets[1::2].mean(dim=(2, 3))).abs().mean().item()
    path = os.path.join(args.model, FILE_NAME)
    record = {
        "factors": latent_rgb.factors,
        "bias": latent_rgb.bias,
        "source": source,
        "rmse_fit": round(fit_rmse, 4),
        "rmse_held_out": round(rmse, 4),
        "mean_colour_error_held_out": round(mean_colour_error, 4),
        "units": "scaled latents in, RGB in [-1, 1] out",
        "color_decoder": args.color_decoder,
    }
    if args.why:
        record["color_decoder_why"] = args.why
    with open(path, "w") as handle:
        json.dump(record, handle, indent=2)
        handle.write("\n")
    print(json.dumps(record, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
