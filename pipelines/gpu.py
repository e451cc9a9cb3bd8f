"""`spaces.GPU` for Hugging Face ZeroGPU; elsewhere the decorator returns the function unchanged.

On ZeroGPU a decorated function runs in a forked worker: its arguments and every value it yields are pickled, any
exception other than `gr.Error` arrives as a bare "ZeroGPU worker error", and closing the caller's generator stops
the worker at its next yield (spaces 0.51, `zero/wrappers.py`). `STUDIO_SIMULATE_ZEROGPU=1` makes the decorator
enforce that contract on any machine (a forked process per call, pickled arguments and results), so a test or a
developer sees an unpicklable argument before a Space does.
"""

from __future__ import annotations

import functools
import inspect
import multiprocessing
import os
import pickle
import queue
import time
import traceback
from collections.abc import Callable, Iterator

SIMULATE_ENV = "STUDIO_SIMULATE_ZEROGPU"
WORKER_ERROR = "ZeroGPU worker error"

try:  # the `spaces` package is a no-op off ZeroGPU, but keep the app importable without it
    import spaces
    from spaces.config import Config as _SpacesConfig
except ImportError:  # pragma: no cover
    spaces = None
    _SpacesConfig = None


def simulating() -> bool:
    """True when `STUDIO_SIMULATE_ZEROGPU=1`: GPU functions run in forked workers as on ZeroGPU."""
    return os.environ.get(SIMULATE_ENV, "").strip() == "1"


def on_zero_gpu() -> bool:
    """True on ZeroGPU hardware (detected as the `spaces` package does: `SPACES_ZERO_GPU`), or when simulating it."""
    return simulating() or bool(_SpacesConfig is not None and _SpacesConfig.zero_gpu)


def _worker(task, payload: bytes, results, stop_event) -> None:
    """Body of a simulated worker: run the generator, send back each pickled value, stop at a yield when asked."""
    try:
        args, kwargs = pickle.loads(payload)
        generator = task(*args, **kwargs)
        for value in generator:
            if stop_event.is_set():
                generator.close()
                break
            results.put(("value", pickle.dumps(value)))
    except Exception as error:  # the real worker forwards only the class name of a non-Gradio error
        results.put(("error", f"{type(error).__name__}: {traceback.format_exc(limit=3)}"))
    results.put(("end", None))


def _simulated(task: Callable, duration) -> Callable:
    """The ZeroGPU contract for a generator function, on the CPU: a forked process per call."""
    if not inspect.isgeneratorfunction(task):
        raise TypeError(f"{task.__name__}: GPU functions here are generators (Stop reaches a worker at a yield)")

    @functools.wraps(task)
    def handler(*args, **kwargs) -> Iterator:
        seconds = duration(*args, **kwargs) if callable(duration) else duration  # in the caller, as the package does
        if not (isinstance(seconds, int | float) and seconds > 0):
            raise ValueError(f"{task.__name__}: duration must be a positive number of seconds, got {seconds!r}")
        payload = pickle.dumps((args, kwargs))  # raises for a lambda, lock or open file, as on ZeroGPU
        context = multiprocessing.get_context("fork")
        results, stop_event = context.Queue(), context.Event()
        process = context.Process(target=_worker, args=(task, payload, results, stop_event), daemon=True)
        process.start()
        deadline = time.monotonic() + seconds
        try:
            while True:
                try:
                    kind, value = results.get(timeout=1.0)
                except queue.Empty:
                    if not process.is_alive():
                        raise RuntimeError(f"{WORKER_ERROR}: GPU task aborted") from None
                    if time.monotonic() > deadline:  # ZeroGPU ends a task that outlives its duration
                        raise RuntimeError(f"{WORKER_ERROR}: GPU task aborted after its {seconds} s") from None
                    continue
                if kind == "end":
                    break
                if kind == "error":
                    raise RuntimeError(f"{WORKER_ERROR}: {value.splitlines()[0]}")
                try:
                    yield pickle.loads(value)
                except GeneratorExit:
                    stop_event.set()
                    raise
        finally:
            process.join(timeout=0 if time.monotonic() > deadline else 30)
            if process.is_alive():
                process.kill()
                process.join()
            results.close()

    return handler


def gpu(task: Callable | None = None, *, duration: float | Callable = 60) -> Callable:
    """Decorator: `spaces.GPU(duration=...)` (a no-op off ZeroGPU), or the simulated contract when asked."""

    def decorate(function: Callable) -> Callable:
        if simulating():
            return _simulated(function, duration)
        if spaces is None:  # pragma: no cover
            return function
        return spaces.GPU(function, duration=duration)

    return decorate(task) if callable(task) else decorate
