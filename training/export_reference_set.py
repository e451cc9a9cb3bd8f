"""Write the bundled DDPM's reference set: the data set it was trained on, at its resolution, with the names.

    python training/export_reference_set.py        # -> models/emoji/ddpm/reference_set.safetensors

Data-set guidance (pipelines.reference) reads it. 1899 images of 32x32 uint8: 5.8 MB, under a Space's 10 MB.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipelines.bundled import bundled_dir  # noqa: E402
from pipelines.reference import REFERENCE_FILE, save_reference_set  # noqa: E402
from training.build_emoji_dataset import load_dataset  # noqa: E402
from training.common import downsample  # noqa: E402
from training.train_ddpm import DDPMConfig  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(bundled_dir(), "ddpm", REFERENCE_FILE))
    parser.add_argument("--size", type=int, default=DDPMConfig.size, help="the DDPM's training resolution")
    args = parser.parse_args()
    data = load_dataset()
    pixels = torch.from_numpy(data["images"]).permute(0, 3, 1, 2).float() / 127.5 - 1
    save_reference_set(args.out, downsample(pixels, args.size), [str(name) for name in data["names"]])
    print(f"{len(pixels)} images at {args.size} px -> {args.out} ({os.path.getsize(args.out) / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
