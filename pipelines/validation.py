"""Checks shared by every request: numbers in range, seeds. Errors name the parameter and the bad value."""

from __future__ import annotations

import secrets

from guidance.colors import shown

MAX_SEED = 2**32 - 1


def _bound(value: float) -> str:
    """A range bound as people write it: 4294967294, not 4.29497e+09."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def number(name: str, value, kind: type, low: float, high: float):
    """`value` converted to `kind` and checked to lie in [low, high], else ValueError naming `name`."""
    try:
        if kind is int and isinstance(value, float) and not value.is_integer():  # 2.5, nan, inf
            raise ValueError
        converted = kind(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{name} must be a{'n integer' if kind is int else ' number'}, got {shown(value)}") from None
    if not low <= converted <= high:
        raise ValueError(f"{name} must be between {_bound(low)} and {_bound(high)}, got {shown(value)}")
    return converted


def resolve_seed(seed, batch_size: int) -> int:
    """A checked seed; -1 (or None) draws a random one. Image i of the batch uses seed + i."""
    checked = number("seed", -1 if seed is None else seed, int, -1, MAX_SEED - batch_size)
    return secrets.randbelow(2**31) if checked == -1 else checked


def choice(name: str, value, choices) -> str:
    """`value` if it is one of `choices`, else ValueError listing them."""
    if value not in choices:
        raise ValueError(f"{name} {shown(value)} is not one of {', '.join(choices)}")
    return value


def text(name: str, value) -> str:
    """A prompt-like field as a stripped string; ValueError for non-text or text that is not valid Unicode."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{name} must be text, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(f"{name} has an invalid character at position {error.start} (a lone surrogate)") from None
    return value.strip()
