"""Generate without a server: one job from flags, or a file of jobs, one per line.

    python batch.py --prompt "a red heart" --steps 20 --seed 5 --out outputs/
    python batch.py --file jobs.txt --out outputs/

A line is written as stable-diffusion-webui's "Prompts from file or textbox" script reads it (`--prompt a red heart
--negative_prompt blurry --steps 20 --cfg_scale 7 --seed 5 --width 512 --height 512 --sampler_name "Euler a"
--n_iter 2 --batch_size 1 --denoising_strength 0.6 --sd_model ...`; a prompt runs on to the next `--`), plus the
studio's own options: `--tab` (txt2img, the default; img2img, inpaint, unconditional, color_guided, clip_guided)
and every API keyword of that tab (`--model`, `--color`, `--color_scale`, `--clip_prompt`, `--clip_scale`,
`--cuts`, `--image path.png`, `--mask path.png`, `--batch_count`, ...). Its other options (styles, restore_faces,
...) are reported and ignored. Blank lines and lines starting with # are skipped.

It runs the same `pipelines` code as the app and writes PNGs with the app's metadata, named as the app names
downloads (`<tab>-<seed>-<prompt words>.png`). A run records each finished job in `batch-manifest.json` in the
output folder, so a second run skips the jobs whose images exist (a stopped batch resumes). A bad line is reported
with its number and what is wrong, nothing of it runs, and the command exits with status 1 after a summary.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shlex
import sys
from collections.abc import Callable

from guidance.colors import shown
from pipelines.params import PICTURE, PICTURES, defaults, keywords, param
from pipelines.tabs import TABS, family, is_sd

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

# stable-diffusion-webui's option -> the studio's keyword
WEBUI_OPTIONS = {
    "prompt": "prompt",
    "negative_prompt": "negative_prompt",
    "seed": "seed",
    "batch_size": "batch_size",
    "n_iter": "batch_count",
    "steps": "steps",
    "cfg_scale": "guidance_scale",
    "width": "width",
    "height": "height",
    "sampler_name": "scheduler",
    "denoising_strength": "strength",
    "sd_model": "model",
}
WEBUI_IGNORED = {
    "outpath_samples",
    "outpath_grids",
    "prompt_for_display",
    "styles",
    "subseed_strength",
    "subseed",
    "seed_resize_from_h",
    "seed_resize_from_w",
    "sampler_index",
    "restore_faces",
    "tiling",
    "do_not_save_samples",
    "do_not_save_grid",
}
MANIFEST = "batch-manifest.json"


@dataclasses.dataclass
class Job:
    """One line of work: where it came from, its tab and keyword values (pictures as paths)."""

    line: int
    tab: str
    values: dict

    def key(self) -> str:
        """What identifies the job across runs: its tab and values (a picture by its bytes' hash)."""
        values = dict(self.values)
        for name in PICTURES:
            if name in values:
                with open(values[name], "rb") as file:
                    values[name] = hashlib.sha256(file.read()).hexdigest()
        return hashlib.sha256(json.dumps([self.tab, values], sort_keys=True).encode()).hexdigest()[:32]


def split_options(words: list[str]) -> tuple[dict[str, str], list[str]]:
    """{option: value} of `--option value` words, a prompt running on to the next `--` (as the webui script reads
    it), and the webui options ignored; ValueError names what cannot be read."""
    options, ignored, index = {}, [], 0
    while index < len(words):
        word = words[index]
        if not word.startswith("--") or len(word) == 2:
            raise ValueError(f"{word!r}: expected an option starting with --")
        if index + 1 >= len(words):
            raise ValueError(f"{word}: missing its value")
        name, index = word[2:], index + 1
        value = words[index]
        index += 1
        if name in ("prompt", "negative_prompt"):
            while index < len(words) and not words[index].startswith("--"):
                value, index = f"{value} {words[index]}", index + 1
        if name in WEBUI_IGNORED:
            ignored.append(name)
            continue
        options[WEBUI_OPTIONS.get(name, name)] = value
    return options, ignored


def typed_values(tab: str, options: dict[str, str]) -> dict:
    """The options as the tab's keyword values, typed as its parameter table entries say (numbers, true/false, a
    picture's file checked to exist); ValueError names an unknown keyword or a value of the wrong kind."""
    names = [name for name in keywords(tab) if name != "previews"]
    values = {}
    for name, text in options.items():
        if name not in names:
            raise ValueError(f"--{name} is not an option of {tab} (its options: {', '.join(names)})")
        kind = param(tab, name).kind
        if kind is PICTURE:
            if not os.path.isfile(text):
                raise ValueError(f"--{name} {text}: no such file")
            values[name] = text
        elif name == "scheduler" and is_sd(tab):
            values[name] = webui_scheduler(text)
        elif kind is bool:
            if text.lower() not in ("true", "false"):
                raise ValueError(f"--{name} must be true or false, got {text!r}")
            values[name] = text.lower() == "true"
        elif kind in (int, float):
            try:
                number = float(text)
            except ValueError:
                raise ValueError(f"--{name} must be a number, got {text!r}") from None
            if kind is int and not number.is_integer():
                raise ValueError(f"--{name} must be a whole number, got {text!r}")
            values[name] = kind(number)
        else:
            values[name] = text
    return values


def webui_scheduler(name: str) -> str:
    """The studio's scheduler for a scheduler or webui sampler name, matched without regard to case."""
    from pipelines import stable_diffusion as sd

    for choice in sd.SD_SCHEDULERS:
        if name.lower() == choice.lower():
            return choice
    return name  # validation names it and lists the choices


def parse_job(line: int, words: list[str]) -> tuple[Job, list[str]]:
    """A job from one line's words (and the webui options it ignores); ValueError says what is wrong."""
    options, ignored = split_options(words)
    tab = options.pop("tab", "txt2img")
    if tab not in TABS:
        raise ValueError(f"--tab {shown(tab)} is not one of {', '.join(TABS)}")
    return Job(line, tab, typed_values(tab, options)), ignored


def checked_requests(job: Job) -> tuple[Callable, list]:
    """(generate, the checked requests of each of its batches) of a job; ValueError names a bad value."""
    from PIL import Image

    from pipelines.batches import batch_requests

    values = {name: value for name, value in defaults(job.tab).items() if name != "previews"} | job.values
    batch_count = values.pop("batch_count")
    for name in PICTURES:
        if values.get(name) is not None:
            with Image.open(values[name]) as picture:
                picture.load()
                values[name] = picture.copy()
    runs = family(job.tab)
    return runs.generate, batch_requests(runs.validate, runs.request(job.tab, values), batch_count)


def free_path(folder: str, name: str, taken: set[str]) -> str:
    """`name` in `folder`, with a counter when this run or an earlier one already wrote that name."""
    stem, extension = os.path.splitext(name)
    candidate, count = name, 1
    while candidate in taken or os.path.exists(os.path.join(folder, candidate)):
        count += 1
        candidate = f"{stem}-{count}{extension}"
    taken.add(candidate)
    return os.path.join(folder, candidate)


def read_jobs(lines: list[str], report: Callable[[str], None]) -> tuple[list[Job], int]:
    """The jobs of a file's lines, and how many lines were bad (each reported with its number)."""
    jobs, bad = [], 0
    for number, text in enumerate(lines, start=1):
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        try:
            job, ignored = parse_job(number, shlex.split(text))
        except ValueError as error:
            report(f"line {number}: {error}")
            bad += 1
            continue
        if ignored:
            report(f"line {number}: ignored (not offered here): {', '.join('--' + name for name in ignored)}")
        jobs.append(job)
    return jobs, bad


def run_jobs(jobs: list[Job], out: str, report: Callable[[str], None]) -> dict[str, int]:
    """Run every job not already in the output folder's manifest; counts of made, skipped and failed jobs and of
    images written."""
    from tqdm import tqdm

    from pipelines.outputs import download_name, write_png

    os.makedirs(out, exist_ok=True)
    manifest_path = os.path.join(out, MANIFEST)
    manifest = json.load(open(manifest_path)) if os.path.exists(manifest_path) else {}
    counts = {"made": 0, "skipped": 0, "failed": 0, "images": 0}
    taken: set[str] = set()
    for job in tqdm(jobs, desc="jobs", unit="job", file=sys.stderr, disable=len(jobs) < 2):
        key = job.key()
        if key in manifest and all(os.path.exists(os.path.join(out, name)) for name in manifest[key]):
            counts["skipped"] += 1
            continue
        try:
            generate, requests = checked_requests(job)
        except (ValueError, OSError) as error:
            report(f"line {job.line}: {error}")
            counts["failed"] += 1
            continue
        written = []
        for request in requests:
            with tqdm(desc=f"line {job.line}", unit="step", leave=False, file=sys.stderr) as steps:

                def on_step(done: int, total: int, bar=steps) -> None:
                    bar.total = total
                    bar.update(done - bar.n)

                result = generate(request, on_step=on_step)
            for image, parameters in zip(result.images, result.image_parameters):
                path = free_path(out, download_name(parameters), taken)
                write_png(image, parameters, path)
                written.append(os.path.basename(path))
        manifest[key] = written
        with open(manifest_path, "w") as file:  # after each job: a stopped batch resumes from here
            json.dump(manifest, file, indent=1, sort_keys=True)
        counts["made"] += 1
        counts["images"] += len(written)
    return counts


def main(argv: list[str] | None = None) -> int:
    """Run the command; 0 when every line ran (or had run), 1 when a line was bad or failed."""
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], epilog="Job options: see the module docstring or docs/api.md."
    )
    parser.add_argument("--file", help="a file of jobs, one per line")
    parser.add_argument("--out", default="outputs", help="folder for the PNGs (default: outputs)")
    own, job_words = parser.parse_known_args(argv)
    report = lambda message: print(message, file=sys.stderr)  # noqa: E731
    lines = []
    if own.file:
        with open(own.file, encoding="utf-8") as file:
            lines = file.read().splitlines()
    if job_words:
        lines.append(shlex.join(job_words))
    if not lines:
        parser.error("give job options (--prompt ...) or --file")
    jobs, bad = read_jobs(lines, report)
    counts = run_jobs(jobs, own.out, report)
    failed = bad + counts["failed"]
    total = len(jobs) + bad
    print(
        f"{total} job{'s' * (total != 1)}: {counts['made']} made ({counts['images']} images in {own.out}), "
        f"{counts['skipped']} skipped (already made), {failed} bad or failed"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
