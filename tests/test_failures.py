"""Failures a user can act on: running out of accelerator memory is a sentence that says what to lower, the memory
is released, and the next request is served."""

import pytest
import torch

from pipelines import jobs
from pipelines import stable_diffusion as sd
from pipelines import unconditional as uncond


def _fail_once(monkeypatch, module, name, error):
    """Make `module.name` raise `error` on its first call only; returns the list of calls."""
    real, calls = getattr(module, name), []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, flaky)
    return calls


@pytest.fixture
def emptied(monkeypatch):
    """Record calls of torch.cuda.empty_cache, made to count as on a CUDA machine."""
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append(1))
    return calls


@pytest.mark.parametrize(
    "error",
    [
        torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 14.75 GiB total)"),
        RuntimeError("MPS backend out of memory (MPS allocated: 9.0 GB)"),
    ],
)
def test_out_of_memory_says_what_to_lower_and_the_next_request_succeeds(configured, monkeypatch, emptied, error):
    calls = _fail_once(monkeypatch, uncond, "run_sampler", error)
    request = uncond.Request(model=configured["unet"], steps=2, batch_size=2, seed=5)
    with pytest.raises(ValueError) as refused:
        jobs.run_steps(uncond.generate_steps(request))
    message = str(refused.value)
    assert message.startswith("out of GPU memory" if "CUDA" in str(error) else "out of MPS memory")
    assert "lower the number of images, the width and height, or the cutouts" in message
    assert emptied == [1]
    result = jobs.run_steps(uncond.generate_steps(request))  # the next request is served
    assert len(result.images) == 2 and len(calls) == 2


def test_out_of_memory_in_stable_diffusion_is_the_same_sentence(configured, monkeypatch, emptied):
    _fail_once(monkeypatch, sd, "guided_sample", torch.cuda.OutOfMemoryError("CUDA out of memory."))
    request = sd.Request(task="txt2img", prompt="a", steps=2, width=64, height=64, seed=1)
    with pytest.raises(ValueError, match="^out of GPU memory for this request"):
        jobs.run_steps(sd.generate_steps(request))
    assert emptied == [1]


def test_other_runtime_errors_are_not_mistaken_for_memory():
    assert jobs.out_of_memory(RuntimeError("shape mismatch")) is None
    assert jobs.out_of_memory(ValueError("out of memory")) is None  # a refusal, not an allocation failure
    assert jobs.failure(RuntimeError("shape mismatch")).kind == "failed"
