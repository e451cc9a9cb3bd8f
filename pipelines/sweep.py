"""Sweeps: one parameter over a list of values (columns), optionally over seeds (rows), each cell one single-image
request run exactly as a request of its own would run, and a labelled grid of the results."""

from __future__ import annotations

import math
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

from guidance.colors import shown
from pipelines.params import param, sweepable
from pipelines.tabs import TABS

MAX_CELLS = 16
GRID_CELL_MIN_SIDE = 128  # cells smaller than this (the bundled 32 and 64 px models) are enlarged in the grid
LABEL_HEIGHT = 28


@dataclass(frozen=True)
class SweepPlan:
    """A checked sweep: the parameter, its values (columns) and the seeds (rows)."""

    tab: str
    parameter: str
    values: tuple
    seeds: tuple[int, ...]

    def cells(self) -> list[dict]:
        """Each cell's overrides of the tab's settings, row by row: the swept value, its seed, one image."""
        return [{self.parameter: value, "seed": seed, "batch_size": 1} for seed in self.seeds for value in self.values]


def _numbers(name: str, text: str, kind: type) -> tuple:
    """Comma- or space-separated numbers of `kind` from `text`; ValueError names `name` and the bad item."""
    items = [item for item in str(text or "").replace(",", " ").split() if item]
    numbers = []
    for item in items:
        try:
            number = float(item)
        except ValueError:
            raise ValueError(f"{name}: {shown(item)} is not a number (give values like 1, 2.5, 4)") from None
        if not math.isfinite(number):
            raise ValueError(f"{name}: {shown(item)} is not a finite number")
        if kind is int:
            if number != int(number):
                raise ValueError(f"{name}: {shown(item)} is not a whole number")
            number = int(number)
        numbers.append(number)
    return tuple(numbers)


def _choices(name: str, text: str, choices: tuple) -> tuple[str, ...]:
    """Comma-separated choices from `text` (a choice may hold spaces); ValueError names `name` and the bad item."""
    items = tuple(item.strip() for item in str(text or "").split(",") if item.strip())
    for item in items:
        if item not in choices:
            raise ValueError(f"{name}: {shown(item)} is not one of {', '.join(choices)}")
    return items


def plan_sweep(tab: str, parameter: str, values: str, seeds: str, default_seed: int) -> SweepPlan:
    """Check a sweep request: a tab that sweeps, one of its parameters, 1 to 16 values, and seeds (none: the
    settings' seed, `default_seed`); at most MAX_CELLS cells in all. Values are range-checked by each cell's own
    validation, with the message a single request gets."""
    if tab not in TABS:
        raise ValueError(f"tab {shown(tab)} is not one of {', '.join(TABS)}")
    if parameter not in sweepable(tab):
        raise ValueError(
            f"parameter {shown(parameter)} cannot be swept in {tab}; choose one of {', '.join(sweepable(tab))}"
        )
    entry = param(tab, parameter)
    swept = _choices("values", values, entry.options()) if entry.kind is str else _numbers("values", values, entry.kind)
    if not swept:
        example = ", ".join(entry.options()) if entry.kind is str else "1, 2.5, 4"
        raise ValueError(f"values is empty: give the values to compare, like {example}")
    rows = _numbers("seeds", seeds, int) or (default_seed,)
    if len(swept) * len(rows) > MAX_CELLS:
        raise ValueError(
            f"a sweep has at most {MAX_CELLS} cells, got {len(swept)} values x {len(rows)} seeds = "
            f"{len(swept) * len(rows)}"
        )
    return SweepPlan(tab, parameter, swept, rows)


def _font(size: int) -> ImageFont.ImageFont:
    """Pillow's built-in font at `size` px (no font file needed)."""
    return ImageFont.load_default(size=size)


def fitted(draw: ImageDraw.ImageDraw, text: str, font, width: float) -> str:
    """The longest start of `text` (with an ellipsis when cut) that fits in `width` px: a binary search, so a long
    title costs a few dozen measurements, not one per character."""
    if draw.textlength(text, font=font) <= width:
        return text
    low, high = 0, len(text)  # text[:low] + "…" fits (or low is 0); text[:high] + "…" does not
    while high - low > 1:
        middle = (low + high) // 2
        if draw.textlength(text[:middle] + "…", font=font) <= width:
            low = middle
        else:
            high = middle
    return text[:low] + "…"


def _centered_text(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], text: str, font) -> None:
    """`text` on one line (newlines as spaces) centred in `box` (left, top, right, bottom), cut with an ellipsis to
    fit its width."""
    text = fitted(draw, " ".join(text.split()), font, box[2] - box[0] - 4)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    x = box[0] + (box[2] - box[0] - (right - left)) / 2 - left
    y = box[1] + (box[3] - box[1] - (bottom - top)) / 2 - top
    draw.text((x, y), text, fill=(20, 20, 20), font=font)


def value_label(value) -> str:
    """A swept value as the grid writes it."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def sweep_grid(images: list[Image.Image], plan: SweepPlan, title: str) -> Image.Image:
    """The cells (row by row, as `plan.cells()` orders them) in a grid on white: the title on top, the parameter's
    values over the columns, the seeds left of the rows. Cells missing at the end (a stopped sweep) stay blank."""
    columns, rows = len(plan.values), len(plan.seeds)
    cell_width, cell_height = images[0].size
    factor = max(1, -(-GRID_CELL_MIN_SIDE // min(cell_width, cell_height)))
    cell_width, cell_height = cell_width * factor, cell_height * factor
    margin = 96  # the seed labels
    font = _font(14)
    width = margin + columns * cell_width
    height = 2 * LABEL_HEIGHT + rows * cell_height
    grid = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(grid)
    _centered_text(draw, (0, 0, width, LABEL_HEIGHT), title, font)
    for column, value in enumerate(plan.values):
        left = margin + column * cell_width
        box = (left, LABEL_HEIGHT, left + cell_width, 2 * LABEL_HEIGHT)
        _centered_text(draw, box, f"{plan.parameter} {value_label(value)}", font)
    for row, seed in enumerate(plan.seeds):
        top = 2 * LABEL_HEIGHT + row * cell_height
        _centered_text(draw, (0, top, margin, top + cell_height), f"seed {seed}", font)
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        if factor > 1:
            image = image.resize((cell_width, cell_height), Image.Resampling.NEAREST)
        grid.paste(image, (margin + column * cell_width, 2 * LABEL_HEIGHT + row * cell_height))
    return grid
