"""A thread-safe, process-wide cache so each model's weights are loaded once."""

from __future__ import annotations

import threading
from typing import Any, Callable, Hashable


class ModelCache:
    """Load each key once with its loader; concurrent first requests wait for the one load."""

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
