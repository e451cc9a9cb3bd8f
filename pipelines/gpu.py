"""`spaces.GPU` for Hugging Face ZeroGPU; elsewhere the decorator returns the function unchanged."""

from __future__ import annotations

try:  # the `spaces` package is a no-op off ZeroGPU, but keep the app importable without it
    import spaces

    gpu = spaces.GPU
except ImportError:  # pragma: no cover

    def gpu(task=None, **_kwargs):
        """Stand-in for spaces.GPU: returns the function (or a decorator that does)."""
        return task if callable(task) else (lambda function: function)
