"""A thread-safe, process-wide cache so each model's weights are loaded once."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Hashable, Iterator
from typing import Any

from pipelines.bundled import bundled_replaces, caused_by_unreachable_hub, unavailable_message


class ModelUnavailableError(OSError):
    """A model that cannot be loaded because the Hub is unreachable and it is not cached; the message is one
    sentence for the user (which model, why, what to pick instead)."""


@contextlib.contextmanager
def reporting_unreachable_hub(kind: str, model: str) -> Iterator[None]:
    """Turn a load failure of `model` (a model of `kind`) caused by an unreachable Hub into ModelUnavailableError;
    any other error passes through unchanged."""
    try:
        yield
    except Exception as error:
        if not caused_by_unreachable_hub(error):
            raise
        raise ModelUnavailableError(unavailable_message(model, kind, bundled_replaces(kind))) from error


def key_model(key: Hashable) -> tuple[str, str]:
    """(kind, model name) of a cache key shaped (kind, reference parts..., device); None parts are left out."""
    if not isinstance(key, tuple) or len(key) < 3:
        return "", str(key)
    return str(key[0]), "/".join(str(part) for part in key[1:-1] if part is not None)


class ModelCache:
    """Load each key once with its loader; concurrent first requests wait for the one load.

    Keys are (kind, reference parts..., device); a load that fails because the Hub is unreachable raises
    ModelUnavailableError naming the reference.
    """

    def __init__(self) -> None:
        self._items: dict[Hashable, Any] = {}
        self._locks: dict[Hashable, threading.Lock] = {}
        self._guard = threading.Lock()
        self.load_count = 0

    def get(self, key: Hashable, loader: Callable[[], Any]) -> Any:
        """The cached value for `key`, loading it with `loader()` the first time."""
        if key in self._items:
            return self._items[key]
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._items:
                with reporting_unreachable_hub(*key_model(key)):
                    self._items[key] = loader()
                self.load_count += 1
        return self._items[key]

    def clear(self) -> None:
        """Forget every cached model (tests)."""
        with self._guard:
            self._items.clear()
            self._locks.clear()
            self.load_count = 0


MODELS = ModelCache()
