"""Quality and speed bars of the bundled emoji models, measured in one run.

    python bench/emoji_quality.py                      # the bundled models (models/emoji), every section
    python bench/emoji_quality.py --bundle DIR --docs docs/   # another bundle; also write the sample grid
    python bench/emoji_quality.py --only uncond,color --count 50 --draws 2   # some sections, smaller sets

"Looks like an emoji" is improved precision/recall (Kynkaanniemi et al. 2019, k=3) of L2-normalised image
embeddings of the *scoring* CLIP (never the guiding one), generated set versus an equal-size random set of real
emoji; real images go through the model's path (area-downsampled to its native size, then upscaled for display like
its samples). Both are biased low at small counts, so the reference is real-vs-real on split halves at the same
count, and every number is a mean +- std over `--draws` seeded draws. Two negative controls (uniform noise, and real
emoji blurred to 4x4 px: colour blobs) show whether the scoring CLIP can tell junk from emoji at all; the scoring CLIP
learnt both kinds as junk, so `--negative-ddpm DIR` adds a held-out one: samples of a model known to fail, such as
the 1638-step CPU export of the bundled DDPM (its grid: coloured shapes and tiles, nothing a person names), restored
from git history into `bench/results/` on first use. A bar that any control reaches is reported as
"metric blind", never as passed. Copy ratio
(Gu et al. 2023): share of samples whose nearest data-set image is closer than 1/3 of the second nearest.

Bars (issue 4), each on the same seeds where two runs are compared:
- unconditional (DDIM, 25 steps): precision >= 0.7x and recall >= 0.5x the real-vs-real values;
- color guidance at the default strength toward #1e90ff at most halves the distance to it versus strength 0, and
  keeps precision >= 0.8x that of the unguided samples;
- CLIP guidance at the default strength (the bundled guiding CLIP), prompt = each of the 20 names below: ranked
  first among the 20 by the scoring CLIP at least 30% of the time (unguided shown beside it), precision >= 0.8x
  unguided;
- txt2img images ranked first among the 20 names by the scoring CLIP at least half the time;
- on CPU a batch of 4 unconditional images at 25 steps and one txt2img image at 25 steps each under 3 s; all
  bundled *.safetensors together under 80 MB.
A section whose weights are missing is skipped with a line saying so. Everything is seeded: two runs print the same
numbers (timings aside). The default run samples about 500 unguided or color-guided and 80 CLIP-guided DDPM images
and 80 txt2img images, several minutes on 2 CPU cores; on a CPU shared with training, `--threads 1` is much faster.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shlex
import sys
import time

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipelines.params import defaults  # noqa: E402

CLIP_TAB = defaults("clip_guided")  # the CLIP-guided tab's defaults: what a user gets

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
STEPS = 25
K = 3  # neighbourhood size of precision/recall
SECTIONS = ("uncond", "color", "clip", "txt2img", "sd-color", "sd-clip", "previews", "speed", "pareto")
# The bundled models each section needs (speed times whichever of ddpm and sd exist).
NEEDS = {
    "uncond": ("ddpm", "clip-score"),
    "color": ("ddpm", "clip-score"),
    "clip": ("ddpm", "clip", "clip-score"),
    "txt2img": ("sd", "clip-score"),
    "sd-color": ("sd",),
    "sd-clip": ("sd", "clip", "clip-score"),
    "previews": ("sd", "ddpm"),
    "speed": (),
    "pareto": ("ddpm", "clip"),
}
RANDOM_SEED_BASE = 50_000  # random name k's candidate seeds: a block of its own from here
BEST_OF = (2, 4, 8)  # best-of-N baselines of the front: N unguided images, the guiding CLIP keeps one
DRAW_SEED_STRIDE = 10_000  # draw d samples seeds d * stride + i: the same first seeds whatever --count is
SPLIT_SEED, REAL_SEED = 1_000, 2_000  # random generators of the real-vs-real halves and of the real comparison sets
GRID_SEEDS = range(16)
BLOB_SIZE = 4  # negative control: real emoji area-downsampled to 4x4 px, the colour blobs of an undertrained DDPM
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The held-out negative control: the bundled DDPM as the CPU had trained it (1638 steps), kept in git history only.
UNDERTRAINED_COMMIT = "1b211007bb3e566c7b5ce6f5ba647b434a431508"
UNDERTRAINED_FILES = (
    "model_index.json",
    "scheduler/scheduler_config.json",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
)
CONTROLS = ("uniform noise images", f"real emoji blurred to {BLOB_SIZE}x{BLOB_SIZE} px")
# A control for recall only: real emoji of one kind (each draw, the nearest neighbours of one real emoji), so
# precision is high and coverage must be low.
COLLAPSED = "collapsed: real emoji of one kind"
# The projection judge: the bundled SD's img2img with an empty prompt and no CFG at this strength and these DDIM steps.
PROJECTION_STRENGTH, PROJECTION_STEPS, PROJECTION_SEED = 0.5, 20, 3_000
PROJECTION_QUANTILE = 0.95  # "on the emoji manifold": moved no further than this quantile of real images moves
MAX_BUNDLE_MB = 80


def log(message: str) -> None:
    """Progress on stderr, so that stdout is the markdown table."""
    print(message, file=sys.stderr, flush=True)


def as_display(images) -> np.ndarray:
    """Generated PIL images as uint8 (N, H, W, 3), enlarged like the app shows them when they come back smaller."""
    from pipelines.outputs import upscale_for_display

    return np.stack([np.asarray(upscale_for_display(image.convert("RGB"))) for image in images])


def real_like_samples(images: np.ndarray, size: int) -> np.ndarray:
    """Real uint8 (N, H, W, 3) images the way a model of native `size` shows its samples: area-downsampled to
    `size`, rounded to uint8, then upscaled for display."""
    from PIL import Image

    from pipelines.outputs import upscale_for_display

    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    small = torch.nn.functional.interpolate(pixels, size=(size, size), mode="area")  # the identity at the same size
    small = small.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return np.stack([np.asarray(upscale_for_display(Image.fromarray(image))) for image in small])


class Scorer:
    """The scoring CLIP: L2-normalised image and text embeddings."""

    def __init__(self, path: str):
        from pipelines.clip import load_clip

        self.clip = load_clip(f"local-dir:{path}", None, torch.device("cpu"))

    @torch.no_grad()
    def images(self, images: np.ndarray, batch_size: int = 128) -> torch.Tensor:
        """(N, D) embeddings of uint8 (N, H, W, 3) images, normalised with the CLIP's mean and std."""
        mean = torch.tensor(self.clip.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.clip.std).view(1, 3, 1, 1)
        size = self.clip.image_size
        features = []
        for start in range(0, len(images), batch_size):
            pixels = torch.from_numpy(images[start : start + batch_size]).permute(0, 3, 1, 2).float() / 255
            if pixels.shape[-2:] != (size, size):
                pixels = torch.nn.functional.interpolate(pixels, size=(size, size), mode="bicubic", antialias=True)
            features.append(self.clip.model.encode_image((pixels - mean) / std).float())
        return torch.nn.functional.normalize(torch.cat(features), dim=-1)

    def texts(self, texts: list[str]) -> torch.Tensor:
        """(len(texts), D) embeddings."""
        return torch.nn.functional.normalize(torch.cat([self.clip.encode_text(text) for text in texts]), dim=-1)


class ProjectionJudge:
    """How far the bundled SD's img2img (empty prompt, no CFG, strength 0.5, 20 DDIM steps, fixed seeds) moves each
    image: the mean absolute pixel change in [0, 1] at 64 px, less its mean per channel (a uniform tint). Emoji move
    little; blotches, colour blobs and noise are repainted into emoji and move far. A judge independent of the DDPM
    and of the scoring CLIP (a pixel-level generative model, though trained on the same emoji), and the first that
    ranks the held-out undertrained DDPM below the shipped one (docs/bundled-models.md, "Bars")."""

    def __init__(self, path: str):
        from diffusers import DDIMScheduler, StableDiffusionImg2ImgPipeline

        self.pipeline = StableDiffusionImg2ImgPipeline.from_pretrained(
            path, safety_checker=None, requires_safety_checker=False, torch_dtype=torch.float32
        )
        self.pipeline.scheduler = DDIMScheduler.from_config(self.pipeline.scheduler.config)
        self.pipeline.set_progress_bar_config(disable=True)

    @torch.no_grad()
    def distances(self, images: np.ndarray, batch_size: int = 16) -> np.ndarray:
        """(N,) mean |img2img(x) - x| of uint8 (N, H, W, 3) images, each seen at 64 px; batch i uses a fixed seed."""
        from PIL import Image

        moved = []
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            batch = [Image.fromarray(image).resize((64, 64), Image.Resampling.BICUBIC) for image in chunk]
            output = self.pipeline(
                prompt=[""] * len(batch),
                image=batch,
                strength=PROJECTION_STRENGTH,
                guidance_scale=1.0,
                num_inference_steps=PROJECTION_STEPS,
                generator=torch.Generator().manual_seed(PROJECTION_SEED + start),
                output_type="np",
            ).images
            source = np.stack([np.asarray(image, dtype=np.float32) / 255 for image in batch])
            change = output - source
            # Modulo a uniform tint: a colour-guided emoji is still an emoji, and the judge, trained on emoji in their
            # own colours, would otherwise count undoing the tint as distance.
            change -= change.mean(axis=(1, 2), keepdims=True)
            moved.append(np.abs(change).mean(axis=(1, 2, 3)))
        return np.concatenate(moved)


def within(distances: np.ndarray, threshold: float) -> float:
    """Share of images the judge moved no further than `threshold`: its precision."""
    return float(np.mean(distances <= threshold))


def rank_one_hits(image_features: torch.Tensor, text_features: torch.Tensor, labels: list[int]) -> int:
    """How many images score highest with their own label's text."""
    return int((image_features @ text_features.T).argmax(dim=1).eq(torch.tensor(labels)).sum())


class Sampler:
    """Bundled-DDPM samples by seed and guidance, each generated once (image i of a call uses seed + i)."""

    def __init__(self):
        self.cache: dict[tuple, np.ndarray] = {}
        self.seconds: dict[tuple, float] = {}  # generation time of each guidance's images, and their number
        self.made: dict[tuple, int] = {}
        self.pictures: dict[int, object] = {}  # data-set index -> the reference picture (PIL) of picture guidance

    @staticmethod
    def key(
        prompt="",
        clip_scale=0.0,
        color="",
        color_scale=0.0,
        steps=STEPS,
        recurrence=1,
        cuts=0,
        particles=1,
        clip_method="",
        picture=-1,
        picture_scale=0.0,
    ) -> tuple:
        """What identifies a guidance setting in the cache (cuts 0 and clip_method "": the tab's defaults; picture:
        the data-set index of the reference picture, guided toward at picture_scale)."""
        clip = clip_scale or picture_scale
        guidance = (prompt if clip_scale else "", clip_scale, color if color_scale else "", color_scale, steps)
        cuts = (cuts or CLIP_TAB["cuts"]) if clip else 0
        guided = clip or color_scale
        method = (clip_method or CLIP_TAB["clip_method"]) if clip else ""
        reference = (picture, picture_scale) if picture_scale else (-1, 0.0)
        return guidance + (recurrence if guided else 1, cuts, particles if guided else 1, method) + reference

    def seconds_per_image(self, **guidance) -> float:
        """Mean generation seconds per image of a guidance setting, over the images made so far (any prompt or
        picture)."""
        key = self.key(**guidance)
        same = [known for known in self.made if known[1:9] == key[1:9] and known[10] == key[10]]
        return sum(self.seconds[known] for known in same) / max(1, sum(self.made[known] for known in same))

    def __call__(self, seeds: list[int], prompt: str = "", clip_scale: float = 0.0, **guidance) -> np.ndarray:
        """uint8 (len(seeds), H, W, 3) samples (DDIM, `steps` steps) for the guidance keywords of `key`, in calls of
        up to MAX_BATCH consecutive seeds."""
        from pipelines import unconditional as uncond
        from pipelines.bundled import BUNDLED_LABEL

        key = self.key(prompt, clip_scale, **guidance)
        _, _, color, color_scale, steps, recurrence, cuts, particles, method, picture, picture_scale = key
        missing = sorted({seed for seed in seeds if (key, seed) not in self.cache})
        runs: list[list[int]] = []
        for seed in missing:
            if runs and seed == runs[-1][-1] + 1 and len(runs[-1]) < uncond.MAX_BATCH:
                runs[-1].append(seed)
            else:
                runs.append([seed])
        for run in runs:
            request = uncond.Request(
                model=BUNDLED_LABEL,
                steps=steps,
                batch_size=len(run),
                seed=run[0],
                prompt=key[0],
                clip_scale=clip_scale,
                color=color,
                color_scale=color_scale,
                recurrence=recurrence,
                cuts=cuts or CLIP_TAB["cuts"],
                particles=particles,
                clip_method=method or CLIP_TAB["clip_method"],
                clip_image=self.pictures.get(picture) if picture_scale else None,
                clip_image_scale=picture_scale,
            )
            started = time.perf_counter()
            images = uncond.generate(request).images
            self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - started
            self.made[key] = self.made.get(key, 0) + len(run)
            for seed, image in zip(run, as_display(images), strict=True):
                self.cache[(key, seed)] = image
        return np.stack([self.cache[(key, seed)] for seed in seeds])


def failed_model_samples(folder: str, seeds: list[int]) -> np.ndarray:
    """uint8 display samples, one per seed, from the DDPM pipeline in `folder` (a model known to fail), drawn exactly
    as the bundled one's: same request, scheduler and steps."""
    from pipelines import unconditional as uncond
    from pipelines.bundled import BUNDLED_LABEL
    from pipelines.outputs import tensor_to_pil

    model = uncond.load_unconditional(folder, torch.device("cpu"))
    images = []
    for start in range(0, len(seeds), uncond.MAX_BATCH):
        run = seeds[start : start + uncond.MAX_BATCH]
        request = uncond.validate(uncond.Request(model=BUNDLED_LABEL, steps=STEPS, batch_size=len(run), seed=run[0]))
        images += tensor_to_pil(uncond.run_sampler(model, request, []))
    return as_display(images)


def undertrained_ddpm() -> str | None:
    """The 1638-step CPU export of the bundled DDPM, written from git history into bench/results/ (git-ignored) on
    first use; None where that history is missing (a shallow clone, no git)."""
    import subprocess

    folder = os.path.join(REPO_ROOT, "bench", "results", "undertrained-ddpm")
    for name in UNDERTRAINED_FILES:
        target = os.path.join(folder, name)
        if os.path.isfile(target):
            continue
        source = f"{UNDERTRAINED_COMMIT}:models/emoji/ddpm/{name}"
        try:
            content = subprocess.run(["git", "-C", REPO_ROOT, "show", source], capture_output=True, check=True).stdout
        except (OSError, subprocess.CalledProcessError):
            log(f"no held-out undertrained DDPM: {source} is not in this clone's history")
            return None
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as handle:
            handle.write(content)
    return folder


def spread(values: list[float]) -> str:
    """'mean +- std' of a list of numbers."""
    from bench.metrics import mean_std

    mean, std = mean_std(values)
    return f"{mean:.3f} +- {std:.3f}"


def verdict(passed: bool) -> str:
    """Marker appended to a measured value."""
    return " (pass)" if passed else " (**FAIL**)"


def safetensors_megabytes(folder: str) -> float:
    """Total size of the *.safetensors files under `folder`, in MB (10^6 bytes)."""
    total = 0
    for root, _, files in os.walk(folder, followlinks=True):
        total += sum(os.path.getsize(os.path.join(root, name)) for name in files if name.endswith(".safetensors"))
    return total / 1e6


def parse_args(argv=None) -> argparse.Namespace:
    """The command-line flags."""
    from training.build_emoji_dataset import DEFAULT_OUT

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default=None, help="bundled models folder (default: models/emoji)")
    parser.add_argument("--data", default=DEFAULT_OUT, help="the emoji data set (.npz from build_emoji_dataset.py)")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections of {', '.join(SECTIONS)}")
    parser.add_argument("--count", type=int, default=100, help="images per set in precision/recall (N)")
    parser.add_argument("--draws", type=int, default=4, help="seeded draws behind every mean +- std")
    parser.add_argument("--clip-images-per-name", type=int, default=4, help="CLIP-guided images per name")
    parser.add_argument("--images-per-name", type=int, default=4, help="txt2img images per name")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--docs", default=None, help="write the 16-sample unconditional grid into this folder")
    parser.add_argument(
        "--random-names", type=int, default=40, help="names drawn at random from the data set (none of the 20)"
    )
    parser.add_argument("--random-images-per-name", type=int, default=2, help="images per random name")
    parser.add_argument("--front-recurrences", default="1,2,3", help="the front's recurrences (--only pareto)")
    parser.add_argument("--front-cuts", default="4", help="the front's cutout counts (--only pareto), e.g. 1,4")
    parser.add_argument(
        "--front-particles", default="1", help="the front's particles per image (--only pareto), e.g. 1,2,4"
    )
    parser.add_argument(
        "--front-methods", default="cutouts,data set", help="the front's clip_method values (--only pareto)"
    )
    parser.add_argument(
        "--front-settings",
        default="",
        help="explicit front settings instead of the product of the --front-* lists: 'method:strength:recurrence:"
        "particles[:cuts]' separated by ';', e.g. 'cutouts:3:3:1;data set:10:1:2'",
    )
    parser.add_argument(
        "--front-best-of",
        default=",".join(map(str, BEST_OF)),
        help="the front's best-of-N baselines (--only pareto; '' for none), a subset of the default",
    )
    parser.add_argument(
        "--sd-clip-scales", default="", help="the SD CLIP section's random-name front strengths, e.g. 2,4,8,16"
    )
    parser.add_argument(
        "--front-pictures", action="store_true", help="the front also guides toward each name's picture"
    )
    parser.add_argument("--clip-scales", default="", help="CLIP section strengths, e.g. 1,2 (default: the app's)")
    parser.add_argument(
        "--clip-steps", type=int, default=0, help="CLIP section's DDIM steps (default 0: the app's default, 50)"
    )
    parser.add_argument(
        "--clip-recurrence", type=int, default=0, help="CLIP section's recurrence (default 0: the CLIP tab's default)"
    )
    parser.add_argument(
        "--no-projection", action="store_true", help="skip the projection judge (bundled SD img2img, ~0.2 s/image)"
    )
    parser.add_argument(
        "--negative-ddpm",
        default="auto",
        help="a DDPM folder known to fail, a held-out negative control ('' for none; default 'auto': the 1638-step "
        "CPU export of the bundled DDPM, whose samples are coloured shapes, not emoji, restored from git history)",
    )
    args = parser.parse_args(argv)
    if args.negative_ddpm == "auto":
        args.negative_ddpm = undertrained_ddpm()
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(args.only) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}")
    if args.count <= K or args.draws < 1:
        parser.error(f"--count must be above {K} and --draws at least 1")
    return args


class Bench:
    """What the sections share: the flags, the scoring CLIP, the sample cache, the real embeddings, the rows."""

    def __init__(self, args: argparse.Namespace):
        from pipelines.bundled import bundled_path

        self.args, self.count, self.draws = args, args.count, args.draws
        self.scorer = Scorer(bundled_path("clip-score")) if bundled_path("clip-score") else None
        self.sampler = Sampler()
        self.real: torch.Tensor | None = None  # scoring-CLIP embeddings of the whole data set, the DDPM's path
        self.real_precision = self.real_recall = 0.0
        self.rows: list[tuple[str, str, str]] = []  # (bar, measured, target)
        self.controls: tuple[str, ...] = CONTROLS
        self.skipped: list[str] = []
        self.judge = ProjectionJudge(bundled_path("sd")) if bundled_path("sd") and not args.no_projection else None
        self.thresholds: list[float] = []  # per draw: the distance that PROJECTION_QUANTILE of real images stay within
        self.real_projection = self.real_judged = 0.0
        self.projection_blind = self.judged_blind = True

    def dataset(self) -> dict[str, np.ndarray]:
        """The emoji data set (images, names), read once."""
        if not hasattr(self, "_dataset"):
            from training.build_emoji_dataset import load_dataset

            self._dataset = load_dataset(self.args.data)
        return self._dataset

    def nearest_judge(self):
        """The nearest-real-emoji judge over the data set (bench.steering.NearestJudge), made once."""
        from bench.steering import NearestJudge

        if not hasattr(self, "_nearest"):
            self._nearest = NearestJudge(self.dataset()["images"])
        return self._nearest

    def random_names(self) -> tuple[list[int], list[str]]:
        """(data-set indices, names) of the random names (`--random-names`, seeded; none of the 20 hand-picked)."""
        from bench.steering import RANDOM_NAMES_SEED, random_names

        names = [str(name) for name in self.dataset()["names"]]
        indices = random_names(names, self.args.random_names, RANDOM_NAMES_SEED, NAMES)
        return indices, [names[index] for index in indices]

    def draw_seeds(self, draw: int) -> list[int]:
        """The `count` sample seeds of draw `draw`."""
        return [draw * DRAW_SEED_STRIDE + index for index in range(self.count)]

    def real_set(self, draw: int, length: int) -> torch.Tensor:
        """Embeddings of draw `draw`'s random real comparison set of `length` images."""
        return self.real[np.random.default_rng(REAL_SEED + draw).permutation(len(self.real))[:length]]

    def precisions(self, fake: torch.Tensor) -> list[float]:
        """Precision of `fake` against each draw's equal-size real set."""
        from bench.metrics import precision_recall

        return [precision_recall(self.real_set(draw, len(fake)), fake, K)[0] for draw in range(self.draws)]

    def reference(self) -> None:
        """Embed the data set through the DDPM's path; real-vs-real precision/recall and copy ratio on split halves,
        and the same figures for the negative controls (noise, blobs, a failed model, a collapsed set) against the
        same real sets."""
        from bench.metrics import copy_ratio, judged_recall, mean_std, precision_recall
        from pipelines import unconditional as uncond
        from pipelines.bundled import BUNDLED_LABEL
        from training.build_emoji_dataset import load_dataset

        count, draws = self.count, self.draws
        log("embedding the data set")
        size = uncond.get_unconditional(BUNDLED_LABEL).unet.config.sample_size
        size = size if isinstance(size, int) else size[0]
        images = load_dataset(self.args.data)["images"]
        self.real = real = self.scorer.images(real_like_samples(images, size))
        if 2 * count > len(real):
            sys.exit(f"--count {count} needs at least {2 * count} data-set images, there are {len(real)}")
        scores: dict[str, list[float]] = {"precision": [], "recall": [], "copy": [], "projection": [], "judged": []}
        if self.args.negative_ddpm:
            self.controls = CONTROLS + (f"undertrained DDPM ({os.path.basename(self.args.negative_ddpm)})",)
        self.controls += (COLLAPSED,)
        controls: dict[str, dict[str, list[float]]] = {
            name: {"precision": [], "recall": [], "projection": [], "judged": []} for name in self.controls
        }
        for draw in range(draws):
            order = np.random.default_rng(SPLIT_SEED + draw).permutation(len(real))
            first, second = order[: len(real) // 2], order[len(real) // 2 :]
            precision, recall = precision_recall(real[first[:count]], real[second[:count]], K)
            scores["precision"].append(precision)
            scores["recall"].append(recall)
            scores["copy"].append(copy_ratio(real[second[:count]], real[first]))
            noise = np.random.default_rng(SPLIT_SEED + draw).integers(0, 256, images[:count].shape, dtype=np.uint8)
            blobs = real_like_samples(images[second[:count]], BLOB_SIZE)
            # Noise and blobs take the real images' path; a failed model's samples, the samples' path (as they are).
            sets = [real_like_samples(noise, size), real_like_samples(blobs, size)]
            if self.args.negative_ddpm:
                sets.append(failed_model_samples(self.args.negative_ddpm, self.draw_seeds(draw)))
            # A collapsed model: real emoji of one kind only (the `count` nearest, in the scoring CLIP, to one).
            nearest = torch.cdist(real[second[:1]], real[second]).argsort(dim=1)[0, :count].numpy()
            sets.append(real_like_samples(images[second[nearest]], size))
            if self.judge:
                log(f"projection judge: draw {draw}")
                first_half = self.judge.distances(real_like_samples(images[first[:count]], size))
                self.thresholds.append(float(np.quantile(first_half, PROJECTION_QUANTILE)))
                second_half = self.judge.distances(real_like_samples(images[second[:count]], size))
                scores["projection"].append(within(second_half, self.thresholds[-1]))
                accepted = second_half <= self.thresholds[-1]
                scores["judged"].append(judged_recall(real[first[:count]], real[second[:count]], accepted, K))
            for name, control in zip(self.controls, sets, strict=True):
                features = self.scorer.images(control)
                precision, recall = precision_recall(real[first[:count]], features, K)
                controls[name]["precision"].append(precision)
                controls[name]["recall"].append(recall)
                if self.judge:
                    distances = self.judge.distances(control)
                    controls[name]["projection"].append(within(distances, self.thresholds[-1]))
                    accepted = distances <= self.thresholds[-1]
                    controls[name]["judged"].append(judged_recall(real[first[:count]], features, accepted, K))
        self.real_precision, self.real_recall = mean_std(scores["precision"])[0], mean_std(scores["recall"])[0]
        # The scoring CLIP scores colour blobs close to real emoji, so samples must also beat the blob control.
        blob = controls[CONTROLS[1]]
        self.blob_precision, self.blob_recall = mean_std(blob["precision"])[0], mean_std(blob["recall"])[0]

        def reached(metric: str, share: float, reference: float) -> bool:
            """Whether a control meant to fail `metric` reaches `share` x the real reference: the metric is blind."""
            meant = [name for name in self.controls if metric in ("recall", "judged") or name != COLLAPSED]
            return max(mean_std(controls[name][metric])[0] for name in meant) >= share * reference

        self.blind = {"precision": reached("precision", 0.7, self.real_precision)}
        self.blind["recall"] = reached("recall", 0.5, self.real_recall)
        projected = bool(self.judge)
        if projected:
            self.real_projection = mean_std(scores["projection"])[0]
            self.real_judged = mean_std(scores["judged"])[0]
            self.projection_blind = reached("projection", 0.7, self.real_projection)
            self.judged_blind = reached("judged", 0.5, self.real_judged)
        judged = ", projection precision {}, judged recall {}"
        self.rows.append(
            (
                f"reference: real vs real, {count} vs {count} from split halves, {draws} draws",
                f"precision {spread(scores['precision'])}, recall {spread(scores['recall'])}"
                + (judged.format(spread(scores["projection"]), spread(scores["judged"])) if projected else ""),
                "-",
            )
        )
        for name, values in controls.items():
            self.rows.append(
                (
                    f"negative control: {name} vs real, {count} vs {count}, {draws} draws",
                    f"precision {spread(values['precision'])}, recall {spread(values['recall'])}"
                    + (judged.format(spread(values["projection"]), spread(values["judged"])) if projected else ""),
                    "recall and judged recall far below real vs real, else blind"
                    if name == COLLAPSED
                    else "far below real vs real, else the metric is blind",
                )
            )
        self.rows.append(("reference: copy ratio of real images vs the other half", spread(scores["copy"]), "-"))


def section_uncond(bench: Bench) -> None:
    """Unconditional samples: precision/recall against real sets of the same size, copy ratio."""
    from bench.metrics import copy_ratio, judged_recall, mean_std, precision_recall

    count, draws = bench.count, bench.draws
    log(f"unconditional: {draws} x {count} samples")
    scores: dict[str, list[float]] = {"precision": [], "recall": []}
    fakes = []
    for draw in range(draws):
        fake = bench.scorer.images(bench.sampler(bench.draw_seeds(draw)))
        precision, recall = precision_recall(bench.real_set(draw, count), fake, K)
        scores["precision"].append(precision)
        scores["recall"].append(recall)
        fakes.append(fake)
    for name, share in (("precision", 0.7), ("recall", 0.5)):
        measured = mean_std(scores[name])[0]
        reference = bench.real_precision if name == "precision" else bench.real_recall
        blob = bench.blob_precision if name == "precision" else bench.blob_recall
        bench.rows.append(
            (
                f"unconditional {name}, {count} vs {count} real, {draws} draws",
                f"{spread(scores[name])} (x{measured / max(reference, 1e-9):.2f})"
                + (
                    " (metric blind: a negative control reaches this bar)"
                    if bench.blind[name]
                    else verdict(measured >= share * reference and measured > blob)
                ),
                f">= {share} x real-vs-real = {share * reference:.3f}, and > the blob control's {blob:.3f}",
            )
        )
    if bench.judge:
        distances = [bench.judge.distances(bench.sampler(bench.draw_seeds(draw))) for draw in range(draws)]
        projection = [within(distances[draw], bench.thresholds[draw]) for draw in range(draws)]
        judged = [
            judged_recall(bench.real_set(draw, count), fakes[draw], distances[draw] <= bench.thresholds[draw], K)
            for draw in range(draws)
        ]
        judged_row(
            bench,
            f"unconditional projection precision (SD img2img judge), {count} samples, {draws} draws",
            projection,
            (0.7, bench.real_projection, bench.projection_blind),
        )
        judged_row(
            bench,
            f"unconditional judged recall (recall from projection-accepted samples only), {draws} draws",
            judged,
            (0.5, bench.real_judged, bench.judged_blind),
        )
    copies = copy_ratio(torch.cat(fakes), bench.real)
    bench.rows.append((f"unconditional copy ratio vs the data set, {draws * count} samples", f"{copies:.1%}", "-"))


def judged_row(bench: Bench, what: str, values: list[float], bar: tuple[float, float, bool]) -> None:
    """A row for a judge-based figure against `share` x its real reference: (share, reference, whether blind)."""
    from bench.metrics import mean_std

    share, reference, blind = bar
    measured = mean_std(values)[0]
    bench.rows.append(
        (
            what,
            f"{spread(values)} (x{measured / max(reference, 1e-9):.2f})"
            + (
                " (judge blind: a negative control reaches this bar)"
                if blind
                else verdict(measured >= share * reference)
            ),
            f">= {share} x real = {share * reference:.3f}",
        )
    )


def guided_projection_row(bench: Bench, kind: str, guided: np.ndarray, plain: np.ndarray) -> None:
    """The row comparing the projection precision of guided samples (uint8 pixels) with the unguided ones'."""
    if not bench.judge:
        return
    guided_share = within(bench.judge.distances(guided), bench.thresholds[0])
    plain_share = within(bench.judge.distances(plain), bench.thresholds[0])
    bench.rows.append(
        (
            f"{kind}-guided projection precision (unguided: same seeds), {len(guided)} samples",
            f"{guided_share:.3f} (unguided {plain_share:.3f})"
            + (" (judge blind)" if bench.projection_blind else verdict(guided_share >= 0.8 * plain_share)),
            f">= 0.8 x unguided = {0.8 * plain_share:.3f}",
        )
    )


def guided_precision_row(bench: Bench, kind: str, guided: torch.Tensor, plain: torch.Tensor) -> None:
    """The row comparing the precision of guided samples with that of the unguided ones of the same seeds."""
    from bench.metrics import mean_std

    guided_precision, plain_precision = bench.precisions(guided), bench.precisions(plain)
    bar = 0.8 * mean_std(plain_precision)[0]
    bench.rows.append(
        (
            f"{kind}-guided precision vs real (unguided: same seeds), {bench.draws} real draws",
            f"{spread(guided_precision)} (unguided {spread(plain_precision)})"
            + (
                " (metric blind: a negative control reaches real precision)"
                if bench.blind["precision"]
                else verdict(mean_std(guided_precision)[0] >= bar)
            ),
            f">= 0.8 x unguided = {bar:.3f}",
        )
    )


def section_color(bench: Bench) -> None:
    """Color guidance toward TARGET at the default strength versus strength 0 on draw 0's seeds."""
    from guidance import color_distance, parse_color
    from pipelines import unconditional as uncond

    log(f"color guidance: {bench.count} samples")
    seeds, target, scale = bench.draw_seeds(0), parse_color(TARGET), uncond.DEFAULT_COLOR_SCALE
    plain, guided = bench.sampler(seeds), bench.sampler(seeds, color=TARGET, color_scale=scale)

    def distance(images: np.ndarray) -> float:
        return color_distance(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255, target).mean().item()

    ratio = distance(guided) / distance(plain)
    bench.rows.append(
        (
            f"color distance to {TARGET}, strength {scale:g} vs 0, {len(seeds)} seeds",
            f"{distance(guided):.3f} vs {distance(plain):.3f} (x{ratio:.2f})" + verdict(ratio <= 0.5),
            "<= x0.50",
        )
    )
    guided_precision_row(bench, "color", bench.scorer.images(guided), bench.scorer.images(plain))
    guided_projection_row(bench, "color", guided, plain)


def section_clip(bench: Bench) -> None:
    """CLIP guidance by the bundled guiding CLIP toward each name, judged by the scoring CLIP, at the app's default
    strength or at each of `--clip-scales` (a calibration sweep)."""

    per_name = bench.args.clip_images_per_name
    scales = [float(value) for value in bench.args.clip_scales.split(",")] if bench.args.clip_scales else []
    log(f"CLIP guidance: {len(NAMES)} names x {per_name} samples")
    text = bench.scorer.texts(NAMES)
    labels = [index for index in range(len(NAMES)) for _ in range(per_name)]
    seeds = list(range(len(labels)))  # name i gets seeds i * per_name + j: draw 0's seeds when --count allows
    steps = bench.args.clip_steps or CLIP_TAB["steps"]
    recurrence = bench.args.clip_recurrence or CLIP_TAB["recurrence"]
    plain = bench.sampler(seeds, steps=steps)
    plain_features = bench.scorer.images(plain)
    plain_hits, total = rank_one_hits(plain_features, text, labels), len(labels)
    for scale in scales or [CLIP_TAB["clip_scale"]]:
        guided = np.concatenate(
            [
                bench.sampler(
                    seeds[index * per_name : (index + 1) * per_name],
                    name,
                    scale,
                    steps=steps,
                    recurrence=recurrence,
                    particles=CLIP_TAB["particles"],
                )
                for index, name in enumerate(NAMES)
            ]
        )
        guided_features = bench.scorer.images(guided)
        hits = rank_one_hits(guided_features, text, labels)
        bench.rows.append(
            (
                f"CLIP-guided (strength {scale:g}, {steps} steps, recurrence {recurrence}) ranked first of 20 by the "
                "scoring CLIP",
                f"{hits}/{total} = {hits / total:.0%} (unguided: {plain_hits}/{total} = {plain_hits / total:.0%})"
                + verdict(hits / total >= 0.3),
                ">= 30%",
            )
        )
        what = f"CLIP (strength {scale:g}, {steps} steps, recurrence {recurrence})"
        guided_precision_row(bench, what, guided_features, plain_features)
        guided_projection_row(bench, what, guided, plain)
        random_name_rows(bench, scale, steps, recurrence)


def name_seeds(bench: Bench, name: int, count: int) -> list[int]:
    """The first `count` candidate seeds of random name number `name` (its delivered images take the first ones;
    best-of-N draws its candidates from the same block)."""
    start = RANDOM_SEED_BASE + name * bench.args.random_images_per_name * max(BEST_OF)
    return list(range(start, start + count))


def random_name_images(
    bench: Bench, scale: float, steps: int, recurrence: int, per_name: int = 0, picture: bool = False, **guidance
) -> np.ndarray:
    """The images of every random name, `per_name` (default `--random-images-per-name`) each on its own seeds,
    CLIP-guided at `scale` (0: unguided) toward the name, or with `picture` toward its image in the data set (the
    picture a user would upload), with the sampler's other keywords (cuts, particles, clip_method)."""
    per_name = per_name or bench.args.random_images_per_name
    indices, names = bench.random_names()
    batches = []
    for position, (index, name) in enumerate(zip(indices, names)):
        seeds = name_seeds(bench, position, per_name)
        if picture and scale:
            name_picture(bench, index)
            batches.append(
                bench.sampler(seeds, steps=steps, recurrence=recurrence, picture=index, picture_scale=scale, **guidance)
            )
        else:
            batches.append(
                bench.sampler(seeds, name if scale else "", scale, steps=steps, recurrence=recurrence, **guidance)
            )
    return np.concatenate(batches)


def random_name_rows(bench: Bench, scale: float, steps: int, recurrence: int) -> None:
    """CLIP guidance toward names drawn at random, judged by the nearest real emoji (top 1 and top 3 of the whole
    data set, in pixels at 32 px) and by the scoring CLIP among those names, beside unguided images of the same
    seeds; seconds per delivered image; the labelled grid of the guided images into `--docs`."""
    from bench.steering import hit_rates, labelled_grid

    indices, names = bench.random_names()
    per_name = bench.args.random_images_per_name
    log(f"CLIP guidance on {len(names)} random names x {per_name}")
    labels = [index for index in indices for _ in range(per_name)]
    plain = random_name_images(bench, 0.0, steps, 1)
    guided = random_name_images(bench, scale, steps, recurrence, particles=CLIP_TAB["particles"])
    judge = bench.nearest_judge()
    (plain_top1, plain_top3), (top1, top3) = (hit_rates(judge.ranks(images, labels)) for images in (plain, guided))
    seconds = bench.sampler.seconds_per_image(
        clip_scale=scale, steps=steps, recurrence=recurrence, particles=CLIP_TAB["particles"]
    )
    plain_seconds = bench.sampler.seconds_per_image(steps=steps)
    what = (
        f"strength {scale:g}, {steps} steps, recurrence {recurrence}, {CLIP_TAB['particles']} particles, "
        f"by {CLIP_TAB['clip_method']}"
    )
    bench.rows.append(
        (
            f"CLIP-guided ({what}) on {len(names)} random names x {per_name}: nearest real emoji is the name "
            "(top 1 / top 3 of all, pixels at 32 px)",
            f"{top1:.0%} / {top3:.0%} (unguided, same seeds: {plain_top1:.0%} / {plain_top3:.0%})"
            + verdict(top3 >= 0.5),
            ">= 50% top 3",
        )
    )
    bench.rows.append(
        (
            f"CLIP-guided ({what}) time per delivered image vs unguided",
            f"{seconds:.2f} s vs {plain_seconds:.2f} s (x{seconds / max(plain_seconds, 1e-9):.2f})"
            + verdict(seconds <= 3 * plain_seconds),
            "<= x3",
        )
    )
    if bench.scorer:
        text = bench.scorer.texts(names)
        local = [position for position in range(len(names)) for _ in range(per_name)]
        hits = {
            kind: rank_one_hits(bench.scorer.images(images), text, local)
            for kind, images in (("guided", guided), ("plain", plain))
        }
        bench.rows.append(
            (
                f"CLIP-guided ({what}) ranked first of the {len(names)} random names by the scoring CLIP",
                f"{hits['guided']}/{len(labels)} = {hits['guided'] / len(labels):.0%} (unguided: "
                f"{hits['plain'] / len(labels):.0%})",
                "-",
            )
        )
    guided_projection_row(bench, f"CLIP ({what}, random names)", guided, plain)
    if bench.args.docs:
        shown = slice(0, per_name * 20, per_name)  # each of the first 20 names' first image
        os.makedirs(bench.args.docs, exist_ok=True)
        path = os.path.join(bench.args.docs, "clip_random_names.png")
        log(f"grid: {labelled_grid(guided[shown], names[:20], 5, path)}")


def best_of_images(bench: Bench, count: int, steps: int) -> tuple[np.ndarray, float]:
    """(Delivered images, scoring seconds per delivered image) of best-of-`count`: for each random name and image,
    `count` unguided candidates from the name's seed block, the one the guiding CLIP scores highest with the name."""
    from bench.steering import guiding_scores
    from pipelines.bundled import BUNDLED_LABEL
    from pipelines.clip import get_clip

    clip, per_name = get_clip(BUNDLED_LABEL), bench.args.random_images_per_name
    _, names = bench.random_names()
    kept, scoring = [], 0.0
    for index, name in enumerate(names):
        candidates = bench.sampler(name_seeds(bench, index, per_name * count), steps=steps)
        started = time.perf_counter()
        scores = guiding_scores(candidates, name, clip).view(per_name, count)
        scoring += time.perf_counter() - started
        kept += [candidates[image * count + int(scores[image].argmax())] for image in range(per_name)]
    return np.stack(kept), scoring / len(kept)


def section_pareto(bench: Bench) -> None:
    """The front of CLIP steering on random names: per method and setting, the nearest-real-emoji top-3 hit rate,
    projection precision as a share of unguided's, seconds per delivered image, all in one run; then the settings
    no other beats on all three. With `--front-pictures`, the same for guidance toward each name's picture."""
    from pipelines.bundled import BUNDLED_LABEL
    from pipelines.clip import get_clip

    steps = bench.args.clip_steps or CLIP_TAB["steps"]
    scales = [float(value) for value in bench.args.clip_scales.split(",")] if bench.args.clip_scales else []
    _, names = bench.random_names()
    best_of = [int(value) for value in bench.args.front_best_of.split(",") if value.strip()]
    if any(count not in BEST_OF for count in best_of):
        raise SystemExit(f"--front-best-of takes values among {BEST_OF}, got {best_of}")
    log(
        f"front: {len(names)} random names x {bench.args.random_images_per_name}, unguided, best-of-{best_of}, guidance"
    )
    plain = random_name_images(bench, 0.0, steps, 1)
    unguided_seconds = bench.sampler.seconds_per_image(steps=steps)
    baselines: list[tuple[str, np.ndarray, float]] = [("unguided", plain, unguided_seconds)]
    for count in best_of:
        images, scoring = best_of_images(bench, count, steps)
        baselines.append((f"best-of-{count} (guiding CLIP keeps one)", images, count * unguided_seconds + scoring))
    reads = "x_t (noise-aware CLIP)" if get_clip(BUNDLED_LABEL).noise_aware else "x0"
    every_cuts = [int(value) for value in bench.args.front_cuts.split(",")]
    grid = [
        (scale, recurrence, particles, method, cuts)
        for scale, recurrence, particles, method in itertools.product(
            scales or [CLIP_TAB["clip_scale"]],
            [int(value) for value in bench.args.front_recurrences.split(",")],
            [int(value) for value in bench.args.front_particles.split(",")],
            [method.strip() for method in bench.args.front_methods.split(",")],
        )
        for cuts in (every_cuts if method == "cutouts" else [0])
    ]
    if bench.args.front_settings:  # explicit settings instead of the product
        grid = [front_setting(text) for text in bench.args.front_settings.split(";")]
    text, pictures = list(baselines), [baselines[0]]
    for scale, recurrence, particles, method, cuts in grid:
        guidance = dict(recurrence=recurrence, cuts=cuts, particles=particles, clip_method=method)
        what = (
            (f"cutouts ({reads}), {cuts or CLIP_TAB['cuts']} cutouts" if method == "cutouts" else "data set")
            + f", strength {scale:g}, recurrence {recurrence}"
            + (f", {particles} particles" if particles > 1 else "")
        )
        images = random_name_images(bench, scale, steps, **guidance)
        seconds = bench.sampler.seconds_per_image(clip_scale=scale, steps=steps, **guidance)
        text.append((what, images, seconds))
        if bench.args.front_pictures:
            images = random_name_images(bench, scale, steps, picture=True, **guidance)
            seconds = bench.sampler.seconds_per_image(picture_scale=scale, steps=steps, **guidance)
            pictures.append((what, images, seconds))
    front_rows(bench, "front", text, steps)
    if bench.args.front_pictures:
        front_rows(bench, "picture front (toward the name's own image)", pictures, steps)


def front_setting(text: str) -> tuple[float, int, int, str, int]:
    """(strength, recurrence, particles, method, cuts) of a `--front-settings` entry "method:strength:recurrence:
    particles[:cuts]"."""
    method, scale, recurrence, particles, *cuts = (part.strip() for part in text.split(":"))
    return float(scale), int(recurrence), int(particles), method, int(cuts[0]) if cuts else 0


def front_rows(
    bench: Bench, title: str, settings: list[tuple[str, np.ndarray, float]], steps: int, per_name: int = 0
) -> None:
    """A front's rows: for each (label, images of the random names, seconds per image), the top-1 / top-3 hits of
    the nearest-real-emoji judge, projection precision and time as shares of the first (unguided) setting's; then
    the settings no other beats on all three."""
    from bench.steering import Point, front, hit_rates

    indices, names = bench.random_names()
    per_name = per_name or bench.args.random_images_per_name
    labels = [index for index in indices for _ in range(per_name)]
    judge = bench.nearest_judge()
    plain, unguided_seconds = settings[0][1], settings[0][2]
    plain_share = within(bench.judge.distances(plain), bench.thresholds[0]) if bench.judge else 1.0
    points = []
    for label, images, seconds in settings:
        top1, top3 = hit_rates(judge.ranks(images, labels))
        share = within(bench.judge.distances(images), bench.thresholds[0]) if bench.judge else 1.0
        points.append(Point(label, top3, share / max(plain_share, 1e-9), seconds))
        bench.rows.append(
            (
                f"{title}, {len(names)} random names x {per_name}, {steps} steps: {label}",
                f"top 1 {top1:.0%}, top 3 {top3:.0%}; projection precision x{points[-1].precision:.2f} of unguided; "
                f"{seconds:.2f} s per image (x{seconds / unguided_seconds:.2f})",
                ">= 50% top 3, >= x0.9, <= x3",
            )
        )
    best = front(points)
    bench.rows.append(
        (f"the {title} (no other setting beats these on all three)", "; ".join(p.label for p in best), "-")
    )


def section_txt2img(bench: Bench) -> None:
    """The bundled Stable Diffusion's adherence to each name, judged by the scoring CLIP."""
    from pipelines import stable_diffusion as sd
    from pipelines.bundled import BUNDLED_LABEL

    per_name = bench.args.images_per_name
    log(f"txt2img: {len(NAMES)} names x {per_name} images")
    text = bench.scorer.texts(NAMES)
    hits, total = 0, 0
    for index, name in enumerate(NAMES):
        images = []
        for start in range(0, per_name, sd.MAX_SD_BATCH):
            request = sd.Request(
                task="txt2img",
                model=BUNDLED_LABEL,
                prompt=name,
                steps=STEPS,
                batch_size=min(sd.MAX_SD_BATCH, per_name - start),
                seed=1000 + 10 * index + start,
            )
            images += sd.generate(request).images
        hits += rank_one_hits(bench.scorer.images(as_display(images)), text, [index] * len(images))
        total += len(images)
    bench.rows.append(
        (
            "txt2img ranked first of 20 by the scoring CLIP",
            f"{hits}/{total} = {hits / total:.0%}" + verdict(hits / total >= 0.5),
            ">= 50%",
        )
    )


def sd_guided_and_unguided(
    scale: float, guidance: dict, names: list[str] = NAMES, first_seed: int = 1000
) -> tuple[dict[float, list], dict[float, float]]:
    """Bundled-SD txt2img of each name at strength 0 and `scale` on the same seeds (name i: `first_seed` + 10 i),
    runs alternating so machine load hits both alike: ({strength: [one GenerationResult per name]}, {strength:
    seconds in all}). `guidance(name, strength)` gives the request's prompt and guidance keywords."""
    from pipelines import stable_diffusion as sd
    from pipelines.bundled import BUNDLED_LABEL

    results: dict[float, list] = {0.0: [], scale: []}
    seconds: dict[float, float] = {0.0: 0.0, scale: 0.0}
    for index, name in enumerate(names):
        for strength in (0.0, scale):
            request = sd.Request(
                task="txt2img",
                model=BUNDLED_LABEL,
                steps=STEPS,
                seed=first_seed + 10 * index,
                **guidance(name, strength),
            )
            started = time.perf_counter()
            results[strength].append(sd.generate(request))
            seconds[strength] += time.perf_counter() - started
    return results, seconds


def time_ratio_row(bench: Bench, what: str, seconds: dict[float, float], scale: float, bar: float) -> None:
    """The row comparing guided with unguided time per image."""
    slower = seconds[scale] / seconds[0.0]
    per_image = {strength: total / len(NAMES) for strength, total in seconds.items()}
    bench.rows.append(
        (
            f"SD txt2img time, {what} vs unguided",
            f"{per_image[scale]:.2f} s vs {per_image[0.0]:.2f} s per image (x{slower:.2f})" + verdict(slower <= bar),
            f"<= x{bar:.2f}",
        )
    )


def section_sd_color(bench: Bench) -> None:
    """Color guidance on the bundled Stable Diffusion: txt2img of each name, default strength versus 0, same seeds;
    distance to TARGET and time."""
    from guidance import color_distance, parse_color
    from pipelines import stable_diffusion as sd

    log(f"SD color guidance: {len(NAMES)} names x 2 strengths")
    target, scale = parse_color(TARGET), sd.DEFAULT_SD_COLOR_SCALE
    results, seconds = sd_guided_and_unguided(
        scale, lambda name, strength: dict(prompt=name, color=TARGET, color_scale=strength)
    )
    decoder = results[scale][0].info["color_decoder"].split(":")[0]

    def distance(strength: float) -> float:
        images = [image.convert("RGB") for result in results[strength] for image in result.images]
        pixels = torch.from_numpy(np.stack([np.asarray(image) for image in images]))
        return color_distance(pixels.permute(0, 3, 1, 2).float() / 255, target).mean().item()

    ratio = distance(scale) / distance(0.0)
    bench.rows.append(
        (
            f"SD txt2img color distance to {TARGET}, strength {scale:g} vs 0 ({decoder}), {len(NAMES)} names",
            f"{distance(scale):.3f} vs {distance(0.0):.3f} (x{ratio:.2f})" + verdict(ratio <= 0.5),
            "<= x0.50",
        )
    )
    time_ratio_row(bench, "color-guided", seconds, scale, 1.1)


def section_sd_clip(bench: Bench) -> None:
    """CLIP guidance (the bundled guiding CLIP, through the VAE decoder) on the bundled Stable Diffusion, text prompt
    left empty, toward each name; judged by the scoring CLIP against unguided images of the same seeds."""
    from pipelines import stable_diffusion as sd

    log(f"SD CLIP guidance: {len(NAMES)} names x 2 strengths")
    text, scale = bench.scorer.texts(NAMES), sd.DEFAULT_SD_CLIP_SCALE
    results, seconds = sd_guided_and_unguided(
        scale, lambda name, strength: dict(prompt="", clip_prompt=name, clip_scale=strength)
    )
    hits = {
        strength: sum(
            rank_one_hits(bench.scorer.images(as_display(result.images)), text, [index])
            for index, result in enumerate(results[strength])
        )
        for strength in results
    }
    count = len(NAMES)
    bench.rows.append(
        (
            f"SD txt2img (empty prompt) CLIP-guided toward the name (strength {scale:g}, 4 cutouts), rank 1 of 20",
            f"{hits[scale]}/{count} = {hits[scale] / count:.0%} (unguided: {hits[0.0]}/{count} = "
            f"{hits[0.0] / count:.0%})" + verdict(hits[scale] > hits[0.0]),
            "above unguided",
        )
    )
    time_ratio_row(bench, "CLIP-guided (4 cutouts, VAE decoder)", seconds, scale, 2.0)
    sd_random_name_rows(bench, scale)


def sd_random_name_rows(bench: Bench, scale: float) -> None:
    """SD CLIP guidance (empty prompt) toward names drawn at random, judged by the nearest real emoji, beside
    unguided images of the same seeds, at `scale` and each of `--sd-clip-scales`: the rows and the front, and with
    `--front-pictures` the same toward each name's own image."""
    strengths = sorted({scale, *(float(value) for value in bench.args.sd_clip_scales.split(",") if value.strip())})
    indices, names = bench.random_names()
    pictures = {name: name_picture(bench, index) for index, name in zip(indices, names)}
    kinds = [("text", lambda name, strength: dict(prompt="", clip_prompt=name, clip_scale=strength))]
    if bench.args.front_pictures:
        kinds.append(
            ("picture", lambda name, strength: dict(prompt="", clip_image=pictures[name], clip_image_scale=strength))
        )
    for kind, guidance in kinds:
        log(f"SD CLIP guidance toward the {kind}: {len(names)} random names x {len(strengths)} strengths")
        settings = []
        for strength in strengths:
            results, seconds = sd_guided_and_unguided(strength, guidance, names, RANDOM_SEED_BASE)
            if not settings:
                settings.append(
                    ("unguided", as_display([r.images[0] for r in results[0.0]]), seconds[0.0] / len(names))
                )
            what = f"strength {strength:g}, {CLIP_TAB['cuts']} cutouts"
            images = as_display([r.images[0] for r in results[strength]])
            # Unguided runs alternate with each strength's (sd_guided_and_unguided): time as a ratio to its own.
            ratio = seconds[strength] / seconds[0.0]
            settings.append((what, images, ratio * settings[0][2]))
        title = f"SD txt2img (empty prompt) CLIP-guided toward the {kind}"
        front_rows(bench, title, settings, STEPS, per_name=1)


def name_picture(bench: Bench, index: int):
    """Data-set image `index` as a PIL picture (64 px), the picture a user would upload, made once and kept where
    the sampler finds it (`picture=index`)."""
    from PIL import Image

    return bench.sampler.pictures.setdefault(index, Image.fromarray(bench.dataset()["images"][index]))


def streamed_seconds(run, request, previews: bool) -> tuple[float, int]:
    """(seconds, previews shown) of one job as the app streams it, each preview encoded to PNG as Gradio does."""
    import io

    from pipelines.jobs import Preview, stream_job

    started, shown = time.perf_counter(), 0
    for event in stream_job(run, request, previews=previews):
        if isinstance(event, Preview):
            shown += 1
            for image in event.images:
                image.save(io.BytesIO(), format="png")
    return time.perf_counter() - started, shown


PREVIEW_JOBS = 10  # names per row of the previews section (each job runs twice: previews on, then off)


def section_previews(bench: Bench) -> None:
    """Live previews on versus off, alternating per name on the same seeds, at the server's default spacing (and
    at every step, the worst case): bundled SD txt2img (cheap latent map) and the bundled DDPM (x0)."""
    from unittest import mock

    from pipelines import previews as preview_settings
    from pipelines import stable_diffusion as sd
    from pipelines import unconditional as uncond
    from pipelines.bundled import BUNDLED_LABEL

    ddpm_steps = 50
    jobs = {  # what -> (index, name) -> (run, request)
        f"SD txt2img, {STEPS} steps": lambda index, name: (
            sd.generate,
            sd.validate(sd.Request(task="txt2img", model=BUNDLED_LABEL, prompt=name, steps=STEPS, seed=index)),
        ),
        f"DDPM, 2 images, {ddpm_steps} steps": lambda index, name: (
            uncond.generate,
            uncond.validate(uncond.Request(model=BUNDLED_LABEL, steps=ddpm_steps, batch_size=2, seed=index)),
        ),
    }
    every_step = {preview_settings.PREVIEW_STEPS_ENV: "1", preview_settings.PREVIEW_SECONDS_ENV: "0"}
    for what, job in jobs.items():
        for spacing, environment, bar in (("default spacing", {}, 1.03), ("every step", every_step, None)):
            log(f"previews: {what}, {spacing}, {PREVIEW_JOBS} jobs x on/off")
            seconds, shown = {True: 0.0, False: 0.0}, 0
            with mock.patch.dict(os.environ, environment):
                streamed_seconds(*job(0, NAMES[0]), True)  # warm-up: loads the model
                for index, name in enumerate(NAMES[:PREVIEW_JOBS]):
                    for previews in (True, False):
                        elapsed, count = streamed_seconds(*job(index, name), previews)
                        seconds[previews] += elapsed
                        shown += count
            ratio = seconds[True] / seconds[False]
            bench.rows.append(
                (
                    f"{what}, previews on vs off, {spacing}",
                    f"{seconds[True] / PREVIEW_JOBS:.2f} s vs {seconds[False] / PREVIEW_JOBS:.2f} s per job "
                    f"(x{ratio:.3f}, {shown / PREVIEW_JOBS:.1f} previews per job)"
                    + (verdict(ratio <= bar) if bar else ""),
                    f"<= x{bar:.2f}" if bar else "(worst case, no bar)",
                )
            )


def timed_twice(generate, request) -> float:
    """Seconds of the second of two identical calls (the first loads and warms up)."""
    generate(request)
    started = time.perf_counter()
    generate(request)
    return time.perf_counter() - started


def section_speed(bench: Bench) -> None:
    """CPU timings of the app's two common calls and the size of the bundle."""
    from pipelines import stable_diffusion as sd
    from pipelines import unconditional as uncond
    from pipelines.bundled import BUNDLED_LABEL, bundled_dir, bundled_path

    log("speed")
    if bundled_path("ddpm"):
        request = uncond.Request(model=BUNDLED_LABEL, steps=STEPS, batch_size=4, seed=0)
        seconds = timed_twice(uncond.generate, request)
        bench.rows.append(
            (f"unconditional, batch of 4, {STEPS} steps", f"{seconds:.2f} s" + verdict(seconds < 3), "< 3 s on CPU")
        )
        if bundled_path("clip"):
            seconds = {}
            for scale in (0.0, CLIP_TAB["clip_scale"]):  # side by side, the tab's defaults otherwise
                request = uncond.Request(
                    model=BUNDLED_LABEL,
                    prompt="red heart",
                    clip_scale=scale,
                    seed=0,
                    recurrence=CLIP_TAB["recurrence"],
                    clip_method=CLIP_TAB["clip_method"],
                )
                seconds[scale] = timed_twice(uncond.generate, request)
            plain, default = seconds[0.0], seconds[CLIP_TAB["clip_scale"]]
            bench.rows.append(
                (
                    f"CLIP-guided tab's defaults, 1 image, {CLIP_TAB['steps']} steps, vs the same unguided",
                    f"{default:.2f} s vs {plain:.2f} s (x{default / plain:.2f})",
                    "reported",
                )
            )
    else:
        bench.skipped.append("skipped unconditional speed: no bundled ddpm")
    if bundled_path("sd"):
        request = sd.Request(task="txt2img", model=BUNDLED_LABEL, prompt="red heart", steps=STEPS, seed=0)
        seconds = timed_twice(sd.generate, request)
        bench.rows.append(
            (f"txt2img, 1 image, {STEPS} steps", f"{seconds:.2f} s" + verdict(seconds < 3), "< 3 s on CPU")
        )
    else:
        bench.skipped.append("skipped txt2img speed: no bundled sd")
    megabytes = safetensors_megabytes(bundled_dir())
    bench.rows.append(
        (
            "all bundled *.safetensors",
            f"{megabytes:.1f} MB" + verdict(megabytes < MAX_BUNDLE_MB),
            f"< {MAX_BUNDLE_MB} MB",
        )
    )


RUNS = {
    "uncond": section_uncond,
    "color": section_color,
    "clip": section_clip,
    "txt2img": section_txt2img,
    "sd-color": section_sd_color,
    "sd-clip": section_sd_clip,
    "previews": section_previews,
    "speed": section_speed,
    "pareto": section_pareto,
}


def main(argv=None) -> None:
    started_run = time.perf_counter()
    args = parse_args(argv)
    if args.bundle:
        os.environ["BUNDLED_MODELS_DIR"] = args.bundle
    if args.threads:
        torch.set_num_threads(args.threads)
    # the front's costliest settings (particles x recurrence x cutouts) exceed the CPU's per-request cutout limit
    os.environ.setdefault("STUDIO_MAX_CUTOUT_STEPS", str(10**7))
    os.environ["UNCOND_MODELS"] = os.environ.get("UNCOND_MODELS", "") or "none"

    from pipelines.bundled import bundled_dir, bundled_path
    from training.common import save_grid

    bench = Bench(args)
    seconds: dict[str, float] = {}
    for section in args.only:
        missing = [name for name in NEEDS[section] if bundled_path(name) is None]
        if missing:
            bench.skipped.append(f"skipped {section}: bundled weights missing in {bundled_dir()}: {', '.join(missing)}")
            continue
        started = time.perf_counter()
        if section in ("uncond", "color", "clip", "pareto", "sd-clip") and bench.real is None:
            bench.reference()
            seconds["reference"] = time.perf_counter() - started
            started = time.perf_counter()
        RUNS[section](bench)
        seconds[section] = time.perf_counter() - started
    if args.docs and bundled_path("ddpm"):
        path = os.path.join(args.docs, "emoji_samples.png")
        log(f"grid: {save_grid(bench.sampler(list(GRID_SEEDS)), path, columns=4)}")
    elif args.docs:
        bench.skipped.append("skipped the sample grid: no bundled ddpm")

    device = "CPU" if not torch.cuda.is_available() else torch.cuda.get_device_name()
    print(f"bundle: {bundled_dir()}")
    print(f"device: {device}, {torch.get_num_threads()} threads\n")
    print("| bar | measured | target |")
    print("|---|---|---|")
    for row in bench.rows:
        print(f"| {' | '.join(row)} |")
    for line in bench.skipped:
        print(f"\n{line}")
    print(f"\ncommand: {shlex.join(['python', *sys.argv] if argv is None else ['python', __file__, *argv])}")
    print("seconds per section: " + ", ".join(f"{name} {value:.0f}" for name, value in seconds.items()))
    print(f"wall time: {time.perf_counter() - started_run:.0f} s")


if __name__ == "__main__":
    main()
