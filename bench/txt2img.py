"""txt2img: our wrapper against the bare diffusers StableDiffusionPipeline on the same components, in one run.

    python bench/txt2img.py                  # tiny random SD components (CPU-friendly)
    python bench/txt2img.py --real-size      # SD 1.5-size components from the published configs, random weights
                                             # (512x512, 25 steps: for timing on a GPU)
    python bench/txt2img.py --real-size --speed-options   # then each CUDA speed option off, and torch.compile
    python bench/txt2img.py --family sdxl    # tiny random SDXL components (two text encoders, size ids)

Same components, seed, scheduler and steps on every row; runs alternate (bare, wrapper, color-guided, ...) so
drifts in machine load hit all alike, and the median of each is reported. Besides the bare pipeline and the
wrapper: color guidance at the default strength (cheap latent-to-RGB map), CLIP guidance at the default strength
with 4 cutouts (ViT-B-32 with random weights at real size, a tiny CLIP otherwise, through the VAE decoder), and
the job streamed as the app streams it with live previews on and off (each preview PNG-encoded, as Gradio does).
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import threading
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline  # noqa: E402

from pipelines import stable_diffusion as sd  # noqa: E402
from pipelines.cache import MODELS  # noqa: E402
from pipelines.clip import load_clip  # noqa: E402
from pipelines.config import clip_model  # noqa: E402
from pipelines.device import default_device, model_dtype  # noqa: E402
from pipelines.jobs import Preview, job_threads, stream_job  # noqa: E402
from tests.tiny_models import (  # noqa: E402
    save_clip_tokenizer,
    save_tiny_clip,
    tiny_sd_components,
    tiny_sdxl_components,
)


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


def install_guiding_clip(real_size: bool, device: torch.device) -> None:
    """Make the CLIP that guides the bench model a random ViT-B-32 (real size) or a tiny CLIP, as the wrapper
    would load it."""
    if real_size:
        name, pretrained = clip_model("bench-components")
        bundle = load_clip("ViT-B-32", None, device)  # the default CLIP_MODEL's architecture, random weights
        MODELS.get(("clip", name, pretrained, str(device)), lambda: bundle)
    else:
        os.environ["CLIP_MODEL"] = save_tiny_clip(tempfile.mkdtemp())


def streamed(request: sd.Request, previews: bool) -> None:
    """One job as the app streams it, each preview encoded to PNG as Gradio does."""
    for event in stream_job(sd.generate, request, previews=previews):
        if isinstance(event, Preview):
            for image in event.images:
                image.save(io.BytesIO(), format="png")


def on_job_thread(fn) -> None:
    """Run `fn` on one of the app's reused job threads (`pipelines.jobs.JobThreads`), where the app runs every job.
    Timing rows on the caller's thread against streamed rows on a job thread was unfair both ways: PyTorch keeps
    cuDNN's plans per thread (a fresh thread rebuilds them), and on a CPU a thread whose OpenMP team still spins
    from the last row slows the next one down up to 2x."""
    done, failures = threading.Event(), []

    def task() -> None:
        try:
            fn()
        except BaseException as error:
            failures.append(error)
        finally:
            done.set()

    job_threads().submit(task)
    done.wait()
    if failures:
        raise failures[0]


def timed(fn, device: torch.device) -> float:
    """Wall seconds of `fn()` on a job thread, synchronising the device."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    on_job_thread(fn)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def alternating(rows: dict, repeats: int, device: torch.device) -> dict[str, list[float]]:
    """Seconds of each row's runs, the rows run in turn `repeats` times after one warm-up each."""
    for fn in rows.values():
        on_job_thread(fn)
    times = {name: [] for name in rows}
    for _ in range(repeats):
        for name, fn in rows.items():
            times[name].append(timed(fn, device))
    return times


def print_table(times: dict[str, list[float]], reference: str) -> None:
    """A markdown table of medians, with each row's ratio to the `reference` row."""
    medians = {name: statistics.median(values) for name, values in times.items()}
    width = max(map(len, times)) + 2
    print(f"| {'row':<{width}} | {'s / image':>10} | {'min':>8} | {'max':>8} | {'vs ' + reference:>24} |")
    print(f"|{'-' * (width + 2)}|{'-' * 12}|{'-' * 10}|{'-' * 10}|{'-' * 26}|")
    for row, values in times.items():
        ratio = medians[row] / medians[reference]
        print(
            f"| {row:<{width}} | {medians[row]:>10.4f} | {min(values):>8.4f} | {max(values):>8.4f} | x{ratio:>23.3f} |"
        )
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real-size", action="store_true", help="SD 1.5-size components (random weights)")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--size", type=int, default=None, help="image side (default: native, 64 tiny / 512 real)")
    parser.add_argument("--scheduler", default="DPM++ 2M Karras", choices=list(sd.SD_SCHEDULERS))
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per row, alternating")
    parser.add_argument(
        "--speed-options", action="store_true", help="CUDA: the wrapper with channels-last off, SDPA off, compiled"
    )
    parser.add_argument("--family", default="sd", choices=("sd", "sdxl"), help="SD 1.x or SDXL components")
    args = parser.parse_args()
    if args.family == "sdxl" and args.real_size:
        parser.error("--real-size builds SD 1.5-size components only; SDXL runs tiny")

    device = default_device()
    dtype = model_dtype(device)
    xl = args.family == "sdxl"
    pipeline_class = StableDiffusionXLPipeline if xl else StableDiffusionPipeline
    components = sd15_components() if args.real_size else tiny_sdxl_components() if xl else tiny_sd_components()
    extra = {"add_watermarker": False} if xl else {}
    base = pipeline_class(**components, **extra).to(device=device, dtype=dtype)
    if device.type == "cuda":
        base.unet.to(memory_format=torch.channels_last)
    base.set_progress_bar_config(disable=True)
    # The wrapper finds these components in its cache, exactly where it would keep the ones it loads.
    os.environ["SD_MODEL"] = "bench-components"
    MODELS.get(("sd", "bench-components", str(device)), lambda: base)
    sd.remember_family("bench-components", base)
    install_guiding_clip(args.real_size, device)
    size = args.size or base.unet.config.sample_size * base.vae_scale_factor
    prompt = "a watercolor painting of a fox in the snow"

    # The bare pipeline is built once, as a plain diffusers script would; the wrapper builds a fresh pipeline
    # object (shared weights, own scheduler) per request, so that overhead is counted against it.
    settings = extra if xl else {"requires_safety_checker": False}
    bare_pipeline = pipeline_class(**dict(base.components, **settings))
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

    def request(**guidance) -> sd.Request:
        return sd.Request(
            task="txt2img",
            prompt=prompt,
            scheduler=args.scheduler,
            steps=args.steps,
            width=size,
            height=size,
            seed=0,
            **guidance,
        )

    color = dict(color="#ff8800", color_scale=sd.DEFAULT_SD_COLOR_SCALE)
    clip = dict(clip_prompt="a red fox", clip_scale=sd.DEFAULT_SD_CLIP_SCALE, cuts=4)
    rows = {
        "bare diffusers": bare,
        "our wrapper": lambda: sd.generate(request()),
        f"color-guided ({sd.DEFAULT_SD_COLOR_SCALE:g})": lambda: sd.generate(request(**color)),
        f"CLIP-guided ({sd.DEFAULT_SD_CLIP_SCALE:g}, 4 cuts)": lambda: sd.generate(request(**clip)),
        "streamed, previews off": lambda: streamed(request(), False),
        "streamed, previews on": lambda: streamed(request(), True),
    }
    times = alternating(rows, args.repeats, device)
    name = "SD 1.5-size" if args.real_size else "tiny SDXL" if xl else "tiny SD"
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"models: {name} (random weights), {str(dtype).removeprefix('torch.')}, device: {gpu}")
    print(f"torch {torch.__version__}, {size}x{size}, {args.steps} steps, {args.scheduler}, seed 0")
    print(f"median of {args.repeats} alternating runs\n")
    print_table(times, "our wrapper")
    medians = {name: statistics.median(values) for name, values in times.items()}
    color_row, clip_row = list(rows)[2:4]

    def ratio(row: str, reference: str) -> float:
        return medians[row] / medians[reference]

    print(f"wrapper overhead: {(ratio('our wrapper', 'bare diffusers') - 1) * 100:+.1f}% (target: at most +2%)")
    print(f"color-guided x{ratio(color_row, 'our wrapper'):.3f} (bar 1.1)")
    print(f"CLIP-guided x{ratio(clip_row, 'our wrapper'):.3f} (bar 2)")
    print(f"previews on vs off x{ratio('streamed, previews on', 'streamed, previews off'):.3f} (bar 1.03)\n")
    if args.speed_options and device.type == "cuda":
        speed_options(base, lambda: sd.generate(request()), args.repeats, device)


def speed_options(base: StableDiffusionPipeline, wrapper, repeats: int, device: torch.device) -> None:
    """The wrapper with each CUDA speed option turned off in turn (alternating), then with the UNet compiled."""
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    unet = base.unet

    def with_settings(channels_last: bool, sdpa: bool):
        def run() -> None:
            unet.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
            unet.set_attn_processor(AttnProcessor2_0() if sdpa else AttnProcessor())
            wrapper()

        return run

    rows = {
        "fp16, SDPA, channels-last (default)": with_settings(True, True),
        "channels-last off": with_settings(False, True),
        "SDPA off (plain attention)": with_settings(True, False),
    }
    # Switching the settings costs a little inside each timed run: a fair upper bound for the option rows.
    times = alternating(rows, repeats, device)
    with_settings(True, True)()
    started = time.perf_counter()
    unet.compile()
    wrapper()
    torch.cuda.synchronize()
    print(f"torch.compile of the UNet: first run {time.perf_counter() - started:.1f} s (compilation)")
    times.update(alternating({"compiled UNet": wrapper}, repeats, device))
    print_table(times, "fp16, SDPA, channels-last (default)")


if __name__ == "__main__":
    main()
