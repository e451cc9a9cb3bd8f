"""Helpers shared by the training scripts: seeding, devices, batches, sample grids, fp16 export."""

from __future__ import annotations

import math
import os
import random

import numpy as np
import torch
from PIL import Image


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a CPU generator for the script's own draws."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def pick_device(name: str | None = None) -> torch.device:
    """The requested device, else CUDA when available, else CPU."""
    return torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1)


def random_batches(count: int, batch_size: int, generator: torch.Generator):
    """Endless index batches: a fresh permutation per epoch, drawn from `generator`."""
    while True:
        order = torch.randperm(count, generator=generator)
        for start in range(0, count - batch_size + 1 if count >= batch_size else 1, batch_size):
            yield order[start : start + batch_size]


def save_grid(images, path: str, columns: int | None = None) -> str:
    """Save images (uint8 (N, H, W, 3) or float (N, 3, H, W) in [-1, 1]) as one PNG grid."""
    if isinstance(images, torch.Tensor):
        images = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    count, height, width, _ = images.shape
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    grid = np.full((rows * height, columns * width, 3), 255, dtype=np.uint8)
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        grid[row * height : (row + 1) * height, column * width : (column + 1) * width] = image
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray(grid).save(path)
    return path


class EMA:
    """Exponential moving average of a model's parameters (the weights that get exported)."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.shadow = {name: value.detach().clone().float() for name, value in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        """Move the average toward the model's current weights; early steps average over fewer of them."""
        decay = min(self.decay, (1 + step) / (10 + step))
        for name, value in model.state_dict().items():
            if value.dtype.is_floating_point:
                self.shadow[name].mul_(decay).add_(value.detach().float(), alpha=1 - decay)
            else:
                self.shadow[name].copy_(value)

    def copy_to(self, model: torch.nn.Module) -> None:
        """Load the averaged weights into `model`."""
        model.load_state_dict({name: value.to(model.state_dict()[name].dtype) for name, value in self.shadow.items()})


def parameter_count(model: torch.nn.Module) -> int:
    """Number of parameters."""
    return sum(parameter.numel() for parameter in model.parameters())


def parse_config(config_class, description: str, argv=None):
    """A `config_class` dataclass filled from command-line flags named after its fields (--batch-size ...)."""
    import argparse
    import dataclasses

    kinds = {"int": int, "float": float, "str": str, "str | None": str, "bool": int}
    parser = argparse.ArgumentParser(description=description)
    for field in dataclasses.fields(config_class):
        flag = "--" + field.name.replace("_", "-")
        if str(field.type).startswith("tuple"):
            parser.add_argument(flag, type=int, nargs="+", default=list(field.default))
        else:
            parser.add_argument(flag, type=kinds[str(field.type)], default=field.default)
    values = vars(parser.parse_args(argv))
    for field in dataclasses.fields(config_class):
        if str(field.type).startswith("tuple"):
            values[field.name] = tuple(values[field.name])
    return config_class(**values)
