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


_MISSING = object()


class ModelCache:
    """Load each key once with its loader; concurrent first requests wait for the one load.

    Keys are (kind, reference parts..., device); a load that fails because the Hub is unreachable raises
    ModelUnavailableError naming the reference.
    """

    def __init__(self) -> None:
        self._items: dict[Hashable, Any] = {}
        self._locks: dict[Hashable, threading.Lock] = {}
        self._owners: dict[Hashable, tuple[str, str, int]] = {}  # key -> (group, owner, when last used)
        self._guard = threading.Lock()
        self._clock = 0
        self.load_count = 0

    def get(self, key: Hashable, loader: Callable[[], Any], owner: tuple[str, str, int] | None = None) -> Any:
        """The cached value for `key`, loading it with `loader()` the first time. `owner` = (group, owner, keep): the
        key belongs to `owner` (a Stable Diffusion checkpoint, with its inpainting partner) in `group`, which keeps
        the last `keep` owners used; loading a new one forgets the least recently used others first, so their
        weights are freed once no running request holds them."""
        if owner is not None:
            self._touch(key, owner)
        value = self._items.get(key, _MISSING)  # one read: another thread's eviction may remove the key meanwhile
        if value is not _MISSING:
            return value
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            value = self._items.get(key, _MISSING)
            if value is _MISSING:
                if owner is not None:  # before the load: the memory goes first (a failed load leaves it reloadable)
                    self._evict(*owner)
                with reporting_unreachable_hub(*key_model(key)):
                    value = self._items[key] = loader()
                self.load_count += 1
        return value

    def _touch(self, key: Hashable, owner: tuple[str, str, int]) -> None:
        with self._guard:
            self._clock += 1
            self._owners[key] = (owner[0], owner[1], self._clock)
            for other, (group, name, _) in self._owners.items():  # the owner's other keys are used with it
                if (group, name) == owner[:2]:
                    self._owners[other] = (group, name, self._clock)

    def _evict(self, group: str, owner: str, keep: int) -> None:
        """Forget the keys of all but the `keep` most recently used owners of `group` (`owner` counts as one)."""
        with self._guard:
            last_use: dict[str, int] = {}
            for key, (key_group, name, used) in self._owners.items():
                if key_group == group and name != owner and key in self._items:
                    last_use[name] = max(last_use.get(name, 0), used)
            kept = set(sorted(last_use, key=last_use.get, reverse=True)[: max(0, keep - 1)])
            dropped = [
                key
                for key, (g, name, _) in self._owners.items()
                if g == group and name in last_use and name not in kept
            ]
            for key in dropped:
                self._items.pop(key, None)
                self._owners.pop(key, None)
        if dropped:
            free_memory()

    def loaded(self) -> list[Hashable]:
        """The keys loaded now."""
        return list(self._items)

    def clear(self) -> None:
        """Forget every cached model (tests)."""
        with self._guard:
            self._items.clear()
            self._locks.clear()
            self._owners.clear()
            self.load_count = 0


def free_memory() -> None:
    """Return forgotten weights' memory: Python's cycles collected, and CUDA's cached blocks released."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


MODELS = ModelCache()
