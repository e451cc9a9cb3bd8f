"""Cached, lazily loaded model wrappers: device/dtype choice, seeds, progress, interruption and outputs."""
