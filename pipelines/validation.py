"""Checks shared by every request: numbers in range, seeds. Errors name the parameter and the bad value."""

from __future__ import annotations

import dataclasses
import secrets

from guidance.colors import parse_color, shown
from pipelines.params import PICTURE, PIXEL, Param, labels

# Longest text a field takes: generous (the text encoders read 77 tokens), finite, so that no text costs minutes to
# lay out, store or parse.
MAX_TEXT = 10_000
# The page's label of each API keyword, added to every refusal: people see labels, scripts see keywords.
LABELS = labels()
MAX_SEED = int(PIXEL["seed"].high)


def in_page(name: str, label: str | None = None) -> str:
    """' ("Steps" in the page)' for an API keyword with a label, else ''."""
    label = label or LABELS.get(name)
    return f' ("{label}" in the page)' if label else ""


def plain_number(value: float) -> str:
    """A number as people write it in a message: 4294967294 and 12.5, not 4.29497e+09 or 12.500."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def number(name: str, value, kind: type, low: float, high: float, label: str | None = None):
    """`value` converted to `kind` and checked to lie in [low, high], else ValueError naming `name` (and its label)."""
    try:
        if kind is int and isinstance(value, float) and not value.is_integer():  # 2.5, nan, inf
            raise ValueError
        converted = kind(value)
    except (TypeError, ValueError, OverflowError):
        raise wrong_kind(name, value, kind, label) from None
    if not low <= converted <= high:
        bounds = f"between {plain_number(low)} and {plain_number(high)}"
        raise ValueError(f"{name} must be {bounds}, got {shown(value)}{in_page(name, label)}")
    return converted


def wrong_kind(name: str, value, kind: type, label: str | None = None) -> ValueError:
    """The refusal of a value that is not an integer (`kind` int) or not a number at all."""
    wanted = "an integer" if kind is int else "a number"
    return ValueError(f"{name} must be {wanted}, got {shown(value)}{in_page(name, label)}")


def resolve_seed(seed, batch_size: int) -> int:
    """A checked seed; -1 (or None) draws a random one. Image i of the batch uses seed + i."""
    checked = number("seed", -1 if seed is None else seed, int, -1, MAX_SEED - batch_size)
    return secrets.randbelow(2**31) if checked == -1 else checked


def choice(name: str, value, choices, label: str | None = None):
    """`value` if it is one of `choices`, else ValueError listing them."""
    if value not in choices:
        listed = ", ".join(str(option) for option in choices)
        raise ValueError(f"{name} {shown(value)} is not one of {listed}{in_page(name, label)}")
    return value


def typed(name: str, value, kind: type, label: str | None = None):
    """`value` if it has the type an endpoint's input of `kind` (bool, int, float, str) accepts, as the page's
    components check it: a number that is not a bool (an integer for int), text for str; else ValueError."""
    if kind is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false, got {shown(value)}{in_page(name, label)}")
        return value
    if kind is str:
        if not isinstance(value, str):
            raise ValueError(f"{name} must be text, got {type(value).__name__}{in_page(name, label)}")
        return value
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise wrong_kind(name, value, kind, label)
    if kind is int and isinstance(value, float) and not value.is_integer():  # 2.5, nan, inf
        raise wrong_kind(name, value, kind, label)
    return kind(value)


def check_length(name: str, value: str, label: str | None = None) -> None:
    """ValueError naming `name` when text `value` is longer than MAX_TEXT characters."""
    if len(value) > MAX_TEXT:
        raise ValueError(f"{name} has {len(value)} characters, above the limit of {MAX_TEXT}{in_page(name, label)}")


def text(name: str, value) -> str:
    """A prompt-like field as a stripped string of at most MAX_TEXT characters; ValueError for non-text, text too
    long, or text that is not valid Unicode."""
    if value is None:
        return ""
    check_length(name, typed(name, value, str))
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(
            f"{name} has an invalid character at position {error.start} (a lone surrogate){in_page(name)}"
        ) from None
    return value.strip()


def color_target(color: str, color_scale: float) -> tuple[float, float, float] | None:
    """The RGB target of a checked color and strength: None at strength 0; ValueError for an empty or bad color."""
    if color_scale <= 0:
        return None
    if not color:
        raise ValueError(
            'color is empty but color_scale is above 0; pick a color or set color_scale to 0 ("Target color" '
            'and "Color strength" in the page)'
        )
    return parse_color(color)


def reference_image(image, clip_image_scale: float):
    """The checked CLIP reference picture (RGB) of a request: None at strength 0 (any upload is then ignored);
    ValueError when the strength is above 0 and there is no picture."""
    from pipelines.images import prepare_image

    if clip_image_scale <= 0:
        return None
    if image is None:
        raise ValueError(
            "clip_image is empty but clip_image_scale is above 0; upload a reference image or set clip_image_scale "
            'to 0 ("Reference image" and "Reference strength" in the page)'
        )
    return prepare_image(image, "clip_image")


def clip_text_scale(name: str, prompt: str, clip_scale: float, reference) -> float:
    """The checked strength of CLIP guidance toward the text in `name` (`prompt` or `clip_prompt`): 0 when the text
    is empty and a reference picture guides alone; ValueError when it is empty and nothing else guides."""
    if reference is not None and not prompt:
        return 0.0  # a reference picture alone: the text's strength has nothing to pull toward
    if clip_scale > 0 and not prompt:
        wanted = "a prompt" if name == "prompt" else "a CLIP prompt"
        raise ValueError(
            f"{name} is empty but clip_scale is above 0; write {wanted} or set clip_scale to 0 "
            f'("{LABELS[name]}" and "CLIP guidance strength" in the page)'
        )
    return clip_scale


def checked(name: str, value, entry: Param):
    """`value` checked as the parameter table's `entry` for keyword `name` describes it: a number in its range, one
    of its choices, text (stripped), or a flag; ValueError names the keyword and its label."""
    if entry.choices is not None:
        return choice(name, value, entry.options(), entry.label)
    if entry.kind in (int, float):
        return number(name, value, entry.kind, entry.low, entry.high, entry.label)
    if entry.kind is str:
        return text(name, value)
    if entry.kind is bool:
        return bool(value)
    raise TypeError(f"{name}: a {entry.kind.__name__} is checked by its own code")


def checked_values(request, entries: dict[str, Param], own: tuple[str, ...] = ()) -> dict:
    """The keyword fields of a request dataclass checked by their table `entries`, except pictures and the `own`
    fields its validation checks with code of its own."""
    return {
        item.name: checked(item.name, getattr(request, item.name), entries[item.name])
        for item in dataclasses.fields(request)
        if item.name in entries and item.name not in own and entries[item.name].kind is not PICTURE
    }


def image_fingerprint(image) -> str:
    """'WxH sha256:<16 hex>' of an RGB picture's pixels: what the parameters record of a reference image."""
    import hashlib

    digest = hashlib.sha256(image.tobytes()).hexdigest()[:16]
    return f"{image.width}x{image.height} sha256:{digest}"
