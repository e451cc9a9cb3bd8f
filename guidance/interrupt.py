"""Stop inside a long step: checks between the blocks of a model's forward (and backward) pass.

A step of a large model on a CPU can take a minute and a half (one SD 1.5 UNet step at 1024x1024 on 2 cores), so a
check after every step is not enough. `stop_checks` hooks every block of the given models (each module held in a
ModuleList: UNet down/up blocks, their ResNet and attention blocks, a CLIP's residual blocks, and their direct parts)
and raises StopRequested as soon as `should_stop()` is true. The hooks change no value, act only in the thread that
installed them (cached models are shared by every request of the process) and are removed when the block exits.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator

import torch


class StopRequested(Exception):
    """Raised inside a step to abandon it; the sampler then ends with the images of the last completed step."""


def checked_blocks(root: torch.nn.Module) -> list[torch.nn.Module]:
    """`root`, the modules of `root` held in a ModuleList (the blocks a forward pass goes through one by one) and
    their direct parts (a transformer block's self-attention, cross-attention and feed-forward)."""
    blocks = {id(root): root}
    for module in root.modules():
        if isinstance(module, torch.nn.ModuleList):
            for block in module:
                blocks.setdefault(id(block), block)
                for part in block.children():
                    blocks.setdefault(id(part), part)
    return list(blocks.values())


@contextlib.contextmanager
def stop_checks(models: Iterable[torch.nn.Module | None], should_stop: Callable[[], bool] | None) -> Iterator[None]:
    """Within the block, raise StopRequested at the next block of any of `models` once `should_stop()` is true."""
    if should_stop is None:
        yield
        return
    owner = threading.get_ident()

    def check() -> None:
        if threading.get_ident() == owner and should_stop():
            raise StopRequested()

    def check_gradient(gradient: torch.Tensor) -> None:
        check()

    def before_block(module: torch.nn.Module, args: tuple) -> None:
        check()
        # The backward pass of a guided step (gradients through a CLIP or the UNet) reaches this block's input later.
        if args and isinstance(args[0], torch.Tensor) and args[0].requires_grad and threading.get_ident() == owner:
            args[0].register_hook(check_gradient)

    handles = []
    try:
        for model in models:
            if model is not None:
                handles += [block.register_forward_pre_hook(before_block) for block in checked_blocks(model)]
        yield
    finally:
        for handle in handles:
            handle.remove()
