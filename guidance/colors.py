"""Parse user color strings (hex, rgb()/rgba(), hsl()/hsla(), CSS names) into RGB floats in [0, 1]."""

from __future__ import annotations

import colorsys
import math
import re

from PIL import ImageColor

_HEX = re.compile(r"^#?([0-9a-fA-F]{3}|[0-9a-fA-F]{4}|[0-9a-fA-F]{6}|[0-9a-fA-F]{8})$")
_NUMBER = r"\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)(%?)\s*"
_FUNC = re.compile(r"^(rgba?|hsla?)\((.*)\)$", re.IGNORECASE)


def shown(text, limit: int = 40) -> str:
    """`text` as quoted in an error message: repr, cut to `limit` characters (a bad value is not echoed whole)."""
    quoted = repr(text)
    return quoted if len(quoted) <= limit else quoted[: limit - 1] + "…"


def _channel(value: str, percent: str, text: str) -> float:
    """One rgb() channel as a float in [0, 1]; percentages are of 255."""
    number = float(value)
    fraction = number / 100.0 if percent else number / 255.0
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"color {shown(text)}: channel {shown(value + percent)} is out of range")
    return fraction


def _split_args(body: str, text: str) -> list[tuple[str, str]]:
    """Split 'a, b, c[, d]' or 'a b c [/ d]' into (number, percent-sign) pairs."""
    parts = [p for p in re.split(r"[,\s/]+", body.strip()) if p]
    parsed = []
    for part in parts:
        match = re.fullmatch(_NUMBER.replace(r"\s*", "") + r"(deg)?", part)
        if match is None:
            raise ValueError(f"color {shown(text)}: {shown(part)} is not a number")
        if not math.isfinite(float(match.group(1))):
            raise ValueError(f"color {shown(text)}: {shown(part)} is not a finite number")
        parsed.append((match.group(1), match.group(2)))
    if len(parsed) not in (3, 4):
        raise ValueError(f"color {shown(text)}: expected 3 or 4 components, got {len(parsed)}")
    return parsed


def parse_color(text: str) -> tuple[float, float, float]:
    """Return the (r, g, b) floats in [0, 1] named by `text`; alpha is ignored.

    Accepts `#RRGGBB`, `RRGGBB`, `#RGB`, `RGB`, `#RGBA`, `#RRGGBBAA`, `rgb(...)`/`rgba(...)` with integer, float or
    percentage components, `hsl(...)`/`hsla(...)`, and CSS color names. Raises ValueError naming the value.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"color {shown(text)} is empty; use e.g. '#ff8800', 'rgb(255, 136, 0)' or 'orange'")
    cleaned = text.strip()
    hex_match = _HEX.match(cleaned)
    if hex_match:
        digits = hex_match.group(1)
        if len(digits) in (3, 4):
            digits = "".join(c * 2 for c in digits)
        return tuple(int(digits[i : i + 2], 16) / 255.0 for i in (0, 2, 4))  # type: ignore[return-value]
    func_match = _FUNC.match(cleaned.replace(" (", "("))
    if func_match:
        kind = func_match.group(1).lower()
        args = _split_args(func_match.group(2), text)
        if kind.startswith("rgb"):
            return tuple(_channel(v, p, text) for v, p in args[:3])  # type: ignore[return-value]
        hue = (float(args[0][0]) % 360.0) / 360.0
        saturation, lightness = (float(v) / 100.0 if p else float(v) for v, p in args[1:3])
        for name, value in (("saturation", saturation), ("lightness", lightness)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"color {shown(text)}: {name} is out of range")
        return colorsys.hls_to_rgb(hue, lightness, saturation)
    try:
        if not cleaned.isalpha():
            raise ValueError
        red, green, blue = ImageColor.getrgb(cleaned.lower())[:3]
    except ValueError:
        raise ValueError(
            f"color {shown(text)} is not a color; use '#RRGGBB', '#RGB', 'rgb(r, g, b)', 'hsl(h, s%, l%)' or a CSS name"
        ) from None
    return red / 255.0, green / 255.0, blue / 255.0
