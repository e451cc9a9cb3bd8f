"""Stop signals and step events that cross a process boundary (a ZeroGPU worker is a forked process that receives
its arguments pickled): the Stop button touches a file; the job, wherever it runs, checks for it after every step."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import queue
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

logger = logging.getLogger("studio")


@dataclass(frozen=True)
class StopToken:
    """Picklable stop signal: set when its file exists (a forked worker shares the file system, not the memory)."""

    path: str

    def is_set(self) -> bool:
        return os.path.exists(self.path)

    def set(self) -> None:
        with open(self.path, "a"):
            pass


@dataclass(frozen=True)
class StepDone:
    """Progress event yielded by a generating function after each step: `done` of `total` steps."""

    done: int
    total: int


@dataclass(frozen=True)
class Preview:
    """Live preview event: the images the run predicts after step `done` of `total` (PIL, picklable)."""

    done: int
    total: int
    images: list


@dataclass(frozen=True)
class JobFailed:
    """A failure the user can act on, yielded instead of raised: a worker process turns any exception other than
    `gr.Error` into a bare "ZeroGPU worker error", and pipelines do not import Gradio."""

    message: str
    kind: str = "invalid"  # "invalid" (bad input), "unavailable" (model cannot load), "failed" (anything else)


class StopFlags:
    """One stop token per running job, keyed by the caller's session; nothing is kept once a job ends."""

    def __init__(self, folder: str | None = None) -> None:
        self._folder = folder
        self._running: dict[str, StopToken] = {}
        self._lock = threading.Lock()

    def _path(self, session: str) -> str:
        """A fresh file name for a job of `session` in the private folder (0700, recreated if a cleaner took it)."""
        if self._folder is None or not os.path.isdir(self._folder):
            self._folder = tempfile.mkdtemp(prefix="studio-stop-")
        digest = hashlib.sha256(session.encode("utf-8", "replace")).hexdigest()[:16]
        return os.path.join(self._folder, f"{digest}-{uuid.uuid4().hex}")

    def start(self, session: str) -> StopToken:
        """A cleared token of its own for a job starting in `session`."""
        with self._lock:
            token = StopToken(self._path(session))
            self._running[session] = token
            return token

    def finish(self, session: str, token: StopToken) -> None:
        """Forget the job that `token` belongs to (a later job of the session has its own token)."""
        with self._lock:
            if self._running.get(session) is token:
                del self._running[session]
            with contextlib.suppress(FileNotFoundError):
                os.remove(token.path)

    def stop(self, session: str) -> bool:
        """Ask the job running in `session` to stop; True if there was one to ask."""
        with self._lock:
            token = self._running.get(session)
            if token is None:
                return False
            try:
                token.set()
            except FileNotFoundError:  # the folder was removed under us: the job cannot be reached
                return False
            return True

    def running(self) -> int:
        """How many jobs hold a token now."""
        return len(self._running)


STOP_FLAGS = StopFlags()


class _Raised:
    """An exception raised by the job thread, carried to the generator."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


OUT_OF_MEMORY = (
    "out of {device} memory for this request: lower the number of images, the width and height, or the cutouts per "
    "image (CLIP guidance), then try again; the memory it held has been released"
)


def out_of_memory(error: BaseException) -> str | None:
    """'GPU' (or the device's word) when `error` is an allocation failure of an accelerator, else None."""
    import torch

    if isinstance(error, torch.cuda.OutOfMemoryError):
        return "GPU"
    text = str(error).lower()
    if isinstance(error, RuntimeError) and "out of memory" in text:
        return "MPS" if "mps" in text else "GPU"
    return None


def release_memory(error: BaseException) -> None:
    """Drop what a failed job still holds (its frames keep the activations alive) and empty the CUDA cache."""
    import traceback

    from pipelines.cache import free_memory

    traceback.clear_frames(error.__traceback__)
    free_memory()


def failure(error: Exception) -> JobFailed:
    """The JobFailed event for an exception raised by a job."""
    from pipelines.cache import ModelUnavailableError

    if isinstance(error, ModelUnavailableError):
        return JobFailed(str(error), "unavailable")
    if device := out_of_memory(error):
        release_memory(error)
        logger.warning("out of memory: %s", str(error).splitlines()[0][:200] if str(error) else type(error).__name__)
        return JobFailed(OUT_OF_MEMORY.format(device=device), "invalid")
    if isinstance(error, ValueError):
        return JobFailed(str(error), "invalid")
    logger.error("generation failed", exc_info=error)
    return JobFailed(f"generation failed: {type(error).__name__}: {error}", "failed")


def raise_failure(event: JobFailed) -> None:
    """Raise the exception a JobFailed stands for (ValueError, ModelUnavailableError or RuntimeError)."""
    from pipelines.cache import ModelUnavailableError

    kinds = {"invalid": ValueError, "unavailable": ModelUnavailableError}
    raise kinds.get(event.kind, RuntimeError)(event.message)


class JobThreads:
    """Long-lived daemon threads that run jobs, an idle one reused before a new one starts. PyTorch keeps cuDNN's
    execution plans (convolutions, its attention) per thread, so a fresh thread per job rebuilt them every time: an
    SD 1.5-size 512x512 image took 0.78 s in a fresh thread against 0.37 s in a reused one on an H200
    (`bench/txt2img.py`). Threads do not survive a fork, so a forked worker (ZeroGPU) starts its own."""

    def __init__(self) -> None:
        self.tasks: queue.SimpleQueue = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.idle = 0
        self.pid = os.getpid()

    def submit(self, task: Callable[[], None]) -> None:
        """Run `task` on an idle thread, or on a new one when all are busy."""
        with self.lock:
            if self.idle:
                self.idle -= 1
            else:
                threading.Thread(target=self._serve, name="studio-job", daemon=True).start()
        self.tasks.put(task)

    def _serve(self) -> None:
        while True:
            task = self.tasks.get()
            try:
                task()
            finally:
                with self.lock:
                    self.idle += 1


_job_threads = JobThreads()


def job_threads() -> JobThreads:
    """This process's job threads (a forked child gets fresh ones: its parent's threads are not in it)."""
    global _job_threads
    if _job_threads.pid != os.getpid():
        _job_threads = JobThreads()
    return _job_threads


def stream_job(
    run: Callable, request, stop: StopToken | None = None, previews: bool = False
) -> Iterator[StepDone | Preview | JobFailed | object]:
    """Run `run(request, on_step=..., should_stop=...)` on a job thread and yield a StepDone per step (and a Preview
    whenever `run` sends one, with `previews`), then its result (or a JobFailed). Closing this generator stops the
    job within one step, as a set `stop` token does."""
    events: queue.SimpleQueue = queue.SimpleQueue()
    closed, finished = threading.Event(), threading.Event()
    hooks = {"on_preview": lambda done, total, images: events.put(Preview(done, total, images))} if previews else {}

    def task() -> None:
        try:
            result = run(
                request,
                on_step=lambda done, total: events.put(StepDone(done, total)),
                should_stop=lambda: closed.is_set() or (stop is not None and stop.is_set()),
                **hooks,
            )
        except BaseException as error:  # whatever happens, the generator must get an answer
            result = _Raised(error)
        finally:
            finished.set()
        events.put(result)

    job_threads().submit(task)
    try:
        while True:
            event = events.get()
            if isinstance(event, _Raised):
                yield failure(event.error)
                return
            yield event
            if not isinstance(event, StepDone | Preview):
                return
    finally:
        closed.set()
        finished.wait()


def run_steps(events: Iterator, on_step: Callable[[int, int], None] | None = None):
    """Consume a generate_steps stream: report progress, return the result, raise what a JobFailed stands for."""
    for event in events:
        if isinstance(event, StepDone):
            if on_step is not None:
                on_step(event.done, event.total)
        elif isinstance(event, Preview):
            continue
        elif isinstance(event, JobFailed):
            raise_failure(event)
        else:
            return event
    raise RuntimeError("the generation ended without a result")
