"""How long Stop takes inside one long step: the gaps between stop checks in an SD 1.5-size UNet pass.

    python bench/stop_latency.py                       # SD 1.5-size UNet (random weights), 1024x1024, CFG, 1 image
    python bench/stop_latency.py --size 512 --threads 2

One classifier-free-guided UNet step (batch 2 x images) runs under `guidance.stop_checks` with a check that never
stops but records when it was asked. The longest gap between two checks (the pass's start and end included) is
the longest a Stop waits before the step is abandoned; the VAE decode of the last completed step's latents follows,
so the time from Stop to images is at most their sum. Printed as a markdown table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from bench.txt2img import sd15_components  # noqa: E402
from guidance import stop_checks  # noqa: E402


def check_gaps(model: torch.nn.Module, run) -> tuple[float, list[float]]:
    """(seconds `run()` took, the gaps in seconds between consecutive stop checks in `model`, start and end
    included)."""
    asked: list[float] = []

    def never_stop() -> bool:
        asked.append(time.perf_counter())
        return False

    started = time.perf_counter()
    with stop_checks([model], never_stop):
        run()
    ended = time.perf_counter()
    moments = [started, *asked, ended]
    return ended - started, [later - earlier for earlier, later in zip(moments, moments[1:])]


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024, help="image side in pixels (a multiple of 8)")
    parser.add_argument("--images", type=int, default=1, help="images per request (the UNet sees twice as many)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    components = sd15_components()
    unet, vae = components["unet"].eval(), components["vae"].eval()
    side = args.size // 8
    latents = torch.randn(2 * args.images, 4, side, side, generator=torch.Generator().manual_seed(0))
    text = torch.randn(2 * args.images, 77, 768, generator=torch.Generator().manual_seed(1))
    step_seconds, gaps = check_gaps(unet, lambda: unet(latents, 500, encoder_hidden_states=text))
    started = time.perf_counter()
    vae.decode(latents[: args.images] / vae.config.scaling_factor)
    decode_seconds = time.perf_counter() - started
    threads = torch.get_num_threads()
    print(f"SD 1.5-size UNet, {args.size}x{args.size}, {args.images} image(s) with CFG, CPU, {threads} threads\n")
    print("| measure | seconds |")
    print("|---|---|")
    print(f"| one UNet step | {step_seconds:.1f} |")
    print(f"| stop checks in it | {len(gaps) - 1} |")
    print(f"| longest gap between checks | {max(gaps):.2f} |")
    print(f"| median gap | {statistics.median(gaps):.2f} |")
    print(f"| VAE decode of the partial result | {decode_seconds:.1f} |")
    print(f"| worst time from Stop to images | {max(gaps) + decode_seconds:.1f} |")
    print(f"\ncommand: python bench/stop_latency.py {' '.join(sys.argv[1:])}")


if __name__ == "__main__":
    main()
