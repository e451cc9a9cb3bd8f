"""Device and dtype choice, decided on first use (nothing touches CUDA at import time)."""

from __future__ import annotations

import os

import torch


def default_device() -> torch.device:
    """CUDA if available, then Apple MPS, else CPU; `STUDIO_DEVICE` overrides (e.g. 'cpu')."""
    forced = os.environ.get("STUDIO_DEVICE", "").strip()
    if forced:
        return torch.device(forced)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def model_dtype(device: torch.device) -> torch.dtype:
    """fp16 weights on CUDA (losses stay fp32); fp32 elsewhere (fp16 on CPU fails, MPS is safer in fp32)."""
    return torch.float16 if device.type == "cuda" else torch.float32
