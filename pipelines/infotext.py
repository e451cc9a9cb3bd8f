"""Generation parameters as stable-diffusion-webui writes them in a PNG's `parameters` text chunk, which its PNG
Info tab, Forge, Civitai and many other readers parse:

    a red heart
    Negative prompt: blurry
    Steps: 25, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7.5, Seed: 42, Size: 512x512, Model: ...

The prompt comes first (any number of lines), then the negative prompt (only when there is one), then one line of
`Key: value` pairs separated by ", "; a value holding a comma, colon or newline is written as a JSON string
(stable-diffusion-webui `modules/processing.py` `create_infotext` and `modules/infotext_utils.py` `quote`,
`parse_generation_parameters`, read for this module). The studio writes its own keys beside the standard ones and
reads back every key it writes.
"""

from __future__ import annotations

import json
import math
import re
from bisect import bisect_right

from guidance.colors import shown
from pipelines.params import SD, keywords, png_keys
from pipelines.tabs import PIXEL_TABS, SD_TABS

# The pieces of one "Key: value" pair of the last line (stable-diffusion-webui's regex
# `\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)`, read piece by piece: that regex, tried at every position,
# backtracks through every shorter key and takes time quadratic in a line without a colon).
SPACES = re.compile(r"\s*")
KEY_RUN = re.compile(r"\w[\w \-/]*")  # a key: a word character, then words, spaces, hyphens, slashes
QUOTE_MARKS = re.compile(r'\\.|"|\\')  # an escape pair, a quote that closes a JSON string, a lone backslash
SIZE = re.compile(r"^(\d+)x(\d+)$")
NEGATIVE = "Negative prompt:"


def quote(value) -> str:
    """A value as the parameters line holds it: plain, or a JSON string when it has a comma, colon or newline."""
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if any(mark in text for mark in ",:\n") else text


def unquote(text: str) -> str:
    """The value a quoted (JSON string) or plain parameters value stands for."""
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def format_infotext(prompt: str, negative_prompt: str, pairs: dict) -> str:
    """The `parameters` text: prompt, optional negative prompt line, then the pairs whose value is not None."""
    line = ", ".join(f"{key}: {quote(value)}" for key, value in pairs.items() if value is not None)
    negative = f"\n{NEGATIVE} {negative_prompt}" if negative_prompt else ""
    return f"{prompt}{negative}\n{line}".strip()


def quoted_end(line: str, start: int, marks: list[int]) -> int | None:
    """Where the JSON string opened by the quote at `start` ends (the index after its closing quote) when a pair
    may end there (at a comma or the end of the line), else None. `marks`: where `line` has an unescaped quote or a
    backslash that escapes nothing (QUOTE_MARKS pairs backslashes from the start of each run, as the string's own
    scan does)."""
    index = bisect_right(marks, start)
    if index == len(marks) or line[marks[index]] != '"' or marks[index] == start + 1:
        return None  # no closing quote, a backslash that escapes nothing first, or an empty string ("")
    end = marks[index] + 1
    rest = line[end : end + 2]
    return end if rest in ("", "\n") or rest[0] == "," else None


def infotext_pairs(line: str) -> list[tuple[str, str]]:
    """The (key, value) pairs stable-diffusion-webui's regex finds in the last line of a `parameters` text (values
    as written: quoted, unstripped), in time linear in the line: a key that is not followed by a colon is skipped
    whole, since no key starting inside it can be followed by one either."""
    marks = [found.start() for found in QUOTE_MARKS.finditer(line) if len(found.group()) == 1]
    pairs: list[tuple[str, str]] = []
    position = 0
    while position < len(line):
        start = SPACES.match(line, position).end()
        key = KEY_RUN.match(line, start)
        if key is None:
            position = start + 1
            continue
        colon = key.end()
        if line[colon : colon + 1] != ":" or colon - start < 2:
            position = colon
            continue
        value = SPACES.match(line, colon + 1).end()
        end = quoted_end(line, value, marks) if line[value : value + 1] == '"' else None
        if end is None:
            comma = line.find(",", value)
            end = len(line) if comma < 0 else comma
        pairs.append((line[start:colon], line[value:end]))
        position = end + (line[end : end + 1] == ",")
    return pairs


def parse_infotext(text: str) -> dict[str, str]:
    """The fields of a `parameters` text: "Prompt", "Negative prompt" and every pair of its last line, values as
    text (a `Size: WxH` value also as "Size-1" and "Size-2"). A last line with fewer than three pairs is taken as
    part of the prompt, as stable-diffusion-webui does."""
    *lines, last = text.strip().split("\n")
    pairs = infotext_pairs(last)
    if len(pairs) < 3:
        lines, last, pairs = [*lines, last], "", []
    prompt, negative, in_negative = [], [], False
    for line in lines:
        line = line.strip()
        if line.startswith(NEGATIVE):
            in_negative, line = True, line[len(NEGATIVE) :].strip()
        (negative if in_negative else prompt).append(line)
    fields = {"Prompt": "\n".join(prompt), "Negative prompt": "\n".join(negative)}
    for key, value in pairs:
        value = unquote(value.strip())
        fields[key] = value
        if size := SIZE.match(value):
            fields[f"{key}-1"], fields[f"{key}-2"] = size.groups()
    return fields


# Stable Diffusion scheduler choices whose stable-diffusion-webui "Sampler" and "Schedule type" (since its 1.9) are
# not the choice's own name with the Automatic schedule; older files name the schedule in the sampler ("DPM++ 2M
# Karras"), read as well.
WEBUI_SAMPLERS = {
    "DPM++ 2M Karras": ("DPM++ 2M", "Karras"),
    "Euler SGM Uniform": ("Euler", "SGM Uniform"),
}
TASK_KEY = "Studio task"  # which tab made the image: txt2img, img2img, inpaint, unconditional, color_guided, ...
# stable-diffusion-webui's keys the studio writes in its order, first: the keyword each holds, or a record.
STANDARD = (
    "Steps",
    "Sampler",
    "Schedule type",
    "CFG scale",
    "Seed",
    "Size",
    "Model",
    "Denoising strength",
    "Mask blur",
)
# The keys of the studio's records that are no keyword: the CLIP model that guided, an image's role in its batch.
RECORDED_KEYS = {"clip_model": "CLIP model", "kind": "Studio image", "lora_hashes": "Lora hashes"}
# PNG key -> (API keyword, kind) of every keyword recorded under a key of its own (parameter table).
KEYWORD_KEYS = png_keys()
# The studio's own keys, after the standard ones: parameter name in the JSON -> key in the parameters line.
STUDIO_KEYS = {name: key for key, (name, _) in KEYWORD_KEYS.items() if key not in STANDARD} | RECORDED_KEYS


def recorded(parameters: dict, keys) -> dict:
    """{key: the recorded value of the keyword each of `keys` holds} (None where nothing is recorded)."""
    return {key: parameters.get(KEYWORD_KEYS[key][0]) for key in keys if key in KEYWORD_KEYS}


def decoder_choice(description: str) -> str:
    """The color decoder control's value ("cheap", "vae") of the description the parameters record."""
    return description.split(":")[0]  # "vae: the VAE decoder" -> "vae"


def sd_infotext(parameters: dict) -> str:
    """The `parameters` text of one Stable Diffusion image from its studio parameters."""
    sampler, schedule = webui_sampler(parameters.get("scheduler"))
    size = parameters.get("working_size") or [parameters.get("width"), parameters.get("height")]
    pairs = {
        **dict.fromkeys(STANDARD),
        **recorded(parameters, STANDARD),
        "Sampler": sampler,
        "Schedule type": schedule,
        "Size": f"{size[0]}x{size[1]}",
        TASK_KEY: parameters.get("task"),
    }
    pairs.update({label: parameters.get(key) for key, label in STUDIO_KEYS.items() if key != "kind"})
    if parameters.get("color_decoder"):
        pairs["Color decoder"] = decoder_choice(parameters["color_decoder"])
    return format_infotext(parameters.get("prompt", ""), parameters.get("negative_prompt", ""), pairs)


def pixel_task(parameters: dict) -> str:
    """The pixel-model tab whose controls reproduce an image: CLIP-guided, color-guided or unconditional."""
    if parameters.get("clip_scale", 0) > 0 or parameters.get("clip_image_scale", 0) > 0:
        return "clip_guided"
    return "color_guided" if parameters.get("color_scale", 0) > 0 else "unconditional"


def pixel_infotext(parameters: dict, size: tuple[int, int]) -> str:
    """The `parameters` text of one image of a pixel-model tab (its CLIP prompt, if any, stands as the prompt)."""
    pairs = {
        **dict.fromkeys(STANDARD),
        **recorded(parameters, STANDARD),
        "Sampler": parameters.get("scheduler"),
        "Size": f"{size[0]}x{size[1]}",
        TASK_KEY: pixel_task(parameters),
    }
    pairs.update({label: parameters.get(key) for key, label in STUDIO_KEYS.items()})
    return format_infotext(parameters.get("prompt", ""), "", pairs)


def infotext(parameters: dict, size: tuple[int, int]) -> str:
    """The `parameters` text of an image of `size` (width, height) from the studio parameters stored with it (a
    missing parameter is left out, never an error: a PNG is always written)."""
    return sd_infotext(parameters) if parameters.get("task") in SD_TABS else (pixel_infotext(parameters, size))


# Keys of the parameters line -> (API keyword, type) of the numbers and texts read back (a picture's fingerprint is
# not: the picture must be uploaded again).
READ_NUMBERS = {key: (name, kind) for key, (name, kind) in KEYWORD_KEYS.items() if kind in (int, float)}
READ_TEXTS = {key: name for key, (name, kind) in KEYWORD_KEYS.items() if kind is str}


def webui_sampler(scheduler: str | None) -> tuple[str | None, str | None]:
    """stable-diffusion-webui's (Sampler, Schedule type) of a Stable Diffusion scheduler choice (None: Automatic)."""
    return WEBUI_SAMPLERS.get(scheduler, (scheduler, None))


def sd_scheduler(sampler: str | None, schedule: str | None) -> str | None:
    """The studio's SD scheduler for a stable-diffusion-webui Sampler (and Schedule type), None if it has none."""
    wanted = (sampler, None if schedule in (None, "Automatic") else schedule)
    choices = SD["scheduler"].options()
    for choice in choices:
        if webui_sampler(choice) == wanted:
            return choice
    return sampler if sampler in choices else None  # older files: "DPM++ 2M Karras" in the sampler


def unrecorded_defaults(task: str, values: dict) -> dict:
    """`values` completed with what an image made before a keyword existed ran with, or left unrecorded because it
    was the plain run: recurrence 1 in the guided pixel tabs (each guided step taken once), particles 1, CLIP
    guidance by cutouts (the only method there was), no hires fix."""
    if task in ("color_guided", "clip_guided"):
        values.setdefault("recurrence", 1)
    if "clip_method" in keywords(task):
        values.setdefault("clip_method", "cutouts")
    if "particles" in keywords(task):
        values.setdefault("particles", 1)
    if "hires_scale" in keywords(task):  # no hires fix recorded: none ran
        values.setdefault("hires_scale", SD["hires_scale"].default)
    return values


def read_number(text: str, kind: type) -> int | float:
    """A number of the parameters line as `kind` (int: truncated, as written by any reader); ValueError saying why
    for text that is not a finite number, or an integer beyond 64 bits."""
    try:
        number = float(text)
    except ValueError:
        raise ValueError("is not a number") from None
    if not math.isfinite(number):
        raise ValueError("is not a finite number")
    if kind is int and abs(number) >= 2**63:
        raise ValueError("is too large")
    return int(number) if kind is int else number


def request_values(fields: dict[str, str]) -> tuple[str, dict, list[str]]:
    """(tab, {API keyword: value}, what could not be used) from the fields of a `parameters` text: the studio's own
    keys and stable-diffusion-webui's; a file without a "Studio task" (or with one that is no tab) is a txt2img
    image."""
    task = fields.get(TASK_KEY) or "txt2img"
    values: dict = {}
    skipped: list[str] = []
    if task not in (*SD_TABS, *PIXEL_TABS):
        skipped.append(f"{TASK_KEY}: {shown(task)} is not a tab")
        task = "txt2img"
    for key, (name, kind) in READ_NUMBERS.items():
        if key in fields:
            try:
                values[name] = read_number(fields[key], kind)
            except ValueError as reason:
                skipped.append(f"{key}: {shown(fields[key])} {reason}")
    values.update({name: fields[key] for key, name in READ_TEXTS.items() if key in fields})
    sampler = fields.get("Sampler")
    if task in SD_TABS:
        values["prompt"], values["negative_prompt"] = fields.get("Prompt", ""), fields.get("Negative prompt", "")
        scheduler = sd_scheduler(sampler, fields.get("Schedule type"))
        if scheduler:
            values["scheduler"] = scheduler
        elif sampler:
            schedule = fields.get("Schedule type", "Automatic")
            skipped.append(f"Sampler: {sampler[:40]} (schedule {schedule[:40]}) is not offered")
        if task == "txt2img" and "Size-1" in fields:
            try:
                values["width"], values["height"] = (read_number(fields[f"Size-{side}"], int) for side in "12")
            except ValueError as reason:
                skipped.append(f"Size: {shown(fields['Size-1'] + 'x' + fields['Size-2'])} {reason}")
    else:
        values["prompt"] = fields.get("Prompt", "")
        if sampler:
            values["scheduler"] = sampler
    unrecorded_defaults(task, values)
    return task, values, skipped
