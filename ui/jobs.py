"""Running a generation job from a handler: validation before any GPU, progress, previews, batches, Stop (also for
jobs still waiting in the queue), and errors a user can act on."""

from __future__ import annotations

import contextlib
import logging
import time

import gradio as gr

from pipelines import params
from pipelines.batches import batch_requests
from pipelines.cache import ModelUnavailableError
from pipelines.jobs import STOP_FLAGS, JobFailed, Preview, StepDone
from pipelines.outputs import save_png

logger = logging.getLogger("studio")


PROGRESS_PER_SECOND = 10


GPU_QUEUE = "gpu"  # every generating event shares one queue slot: one job on the accelerator at a time


# Handler arguments that are not one generation's parameters.
HANDLER_ONLY = (*params.HANDLER_ONLY, "request", "progress")


def session_of(request: gr.Request | None) -> str:
    """The caller's session id (the browser tab or gradio_client instance), used for the Stop button."""
    return getattr(request, "session_hash", None) or "anonymous"


def refused(message: str) -> gr.Error:
    """The error for a request refused as asked (bad value, over a limit, model unavailable): one log line, no
    traceback, since nothing in the server went wrong."""
    logger.info("refused: %s", message[:300])
    return gr.Error(message, print_exception=False)


@contextlib.contextmanager
def job_token(request: gr.Request | None):
    """The caller's stop token for the block, taken before validation (which may be slow: a Stop then still finds
    the job), and already set if a Stop came after the job left the queue but before it held a token; an
    unexpected error inside becomes a gr.Error, and the server keeps serving."""
    session = session_of(request)
    token = STOP_FLAGS.start(session)
    if stopped_while_queued():  # checked after the token exists: stop() marks before it looks for tokens
        token.set()
    try:
        yield token
    except gr.Error:
        raise
    except Exception as error:  # a config that cannot be read, the worker died, a ZeroGPU quota...: keep serving
        logger.exception("generation failed")
        raise gr.Error(f"generation failed: {type(error).__name__}: {error}") from None
    finally:
        STOP_FLAGS.finish(session, token)
        stopped_while_queued()  # a mark made while it ran is forgotten with it


def validated(validate, job):
    """`validate(job)`, a refusal naming the bad value (or the model that cannot load) as a gr.Error."""
    try:
        return validate(job)
    except (ValueError, ModelUnavailableError) as error:  # unavailable: one sentence saying what to pick instead
        raise refused(str(error)) from None


def stream_events(generate_steps, job, token, previews: bool, progress: gr.Progress, desc: str = "Sampling"):
    """Run one validated job: yield (gallery, info) previews while it samples, report its progress, and return its
    result; a failure raises gr.Error."""
    progress(0, desc="Loading models")
    reported, result = 0.0, None
    for event in generate_steps(job, token, bool(previews)):
        if isinstance(event, Preview):
            caption = f"preview · step {event.done} of {event.total}"
            yield [(image, caption) for image in event.images], preview_info(event)
        elif isinstance(event, StepDone):
            # At most PROGRESS_PER_SECOND updates: a small model's hundreds of steps a second would flood the page.
            if time.monotonic() - reported >= 1 / PROGRESS_PER_SECOND or event.done == event.total:
                progress((event.done, event.total), desc=desc, unit="steps")
                reported = time.monotonic()
        elif isinstance(event, JobFailed):
            if event.kind == "failed":
                raise gr.Error(event.message)  # a real failure: its traceback goes to the log
            raise refused(event.message)
        else:
            result = event
    if result is None:
        raise gr.Error("generation failed: the GPU worker ended without a result")
    return result


def stopped_note(info: dict) -> str:
    """ "stopped at step k of n" for an interrupted result (also shown as a notice), else ""."""
    if not info.get("interrupted"):
        return ""
    stopped = f"stopped at step {info['stopped_after_step']} of {info['total_steps']}"
    gr.Info(stopped[0].upper() + stopped[1:])
    return stopped


def warn(warnings: list[str]) -> None:
    """Show what changes what the user gets (a truncated or empty prompt...) as visible warnings, each once."""
    for warning in dict.fromkeys(warnings):
        gr.Warning(warning)


def final_gallery(result) -> list:
    """A result's final gallery items: each PNG (with its parameters) and its caption."""
    stopped = stopped_note(result.info)
    return [
        (
            save_png(image, parameters),
            f"{parameters['kind']} · seed {parameters['seed']}" + (f" · {stopped}" * bool(stopped)),
        )
        for image, parameters in zip(result.images, result.image_parameters)
    ]


def run_job(
    generate_steps,
    validate,
    job,
    previews: bool,
    request: gr.Request | None,
    progress: gr.Progress,
    batch_count: int = 1,
):
    """Run a generation job (`batch_count` batches of it, seeds continuing) and stream it to the gallery and the info
    panel: previews of the predicted images while it samples (with `previews`), then the final PNGs with their
    parameters, the finished batches' images staying in view as the next one samples.

    Jobs are validated here, before any GPU is asked for; `generate_steps` (a `@gpu` generator: on ZeroGPU it runs
    in a forked worker) gets only picklable arguments and yields progress and previews, then the result or a
    failure."""
    if (answer := stopped_before_starting()) is not None:
        yield answer
        return
    with job_token(request) as token:
        jobs = validated(lambda first: batch_requests(validate, first, batch_count), job)
        gallery, infos = [], []
        for index, job in enumerate(jobs):
            desc = "Sampling" if len(jobs) == 1 else f"Batch {index + 1} of {len(jobs)}"
            stream = stream_events(generate_steps, job, token, previews, progress, desc)
            result = yield from shown_after(gallery, stream)
            warn(result.info.get("warnings", []))
            gallery += final_gallery(result)
            infos.append(result.info)
            if len(jobs) > 1 and index + 1 < len(jobs) and not result.info.get("interrupted"):
                yield gallery, result.info
            if result.info.get("interrupted"):
                break
    yield gallery, batches_info(infos)


def shown_after(gallery: list, stream):
    """`stream`'s (gallery, info) previews, shown after the images of the batches already finished; returns what
    `stream` returns (closing this generator closes `stream`, which stops its job)."""
    try:
        while True:
            try:
                items, info = next(stream)
            except StopIteration as stop:
                return stop.value
            yield gallery + items, info
    finally:
        stream.close()


def batches_info(infos: list[dict]) -> dict:
    """The info panel of a run: its one batch's info, or for several batches the first's with every seed, the
    batch count and the summed time."""
    if len(infos) == 1:
        return infos[0]
    merged = dict(infos[0])
    merged.update(
        seeds=[seed for info in infos for seed in info["seeds"]],
        batch_count=len(infos),
        interrupted=any(info.get("interrupted") for info in infos),
        elapsed_seconds=round(sum(info.get("elapsed_seconds", 0) for info in infos), 3),
    )
    return merged


def preview_info(event: Preview) -> dict:
    """What the info panel (and a streaming API caller) sees while a preview is shown."""
    return {"preview": True, "step": event.done, "total_steps": event.total}


# Stop must also reach the caller's jobs still waiting in the queue. Gradio's `cancels=` would do that only for the
# browser (its frontend calls /cancel, never an API caller's /stop) and would throw a running job's images away, so
# the handler marks the waiting jobs by event id and each ends as soon as it starts. Event id -> when marked
# (entries of jobs that never start expire).
_STOPPED_WHILE_QUEUED: dict[str, float] = {}
_QUEUED_STOP_MAX_AGE = 3600.0


def _pending_event_ids(session: str) -> list[str]:
    """Ids of `session`'s generation jobs waiting in Gradio's queue or just taken from it (such a job holds no stop
    token until its handler reaches `job_token`); read from Gradio's private queue (it has no public API that lists
    queued events): none if that ever changes."""
    from gradio.context import LocalContext

    try:
        queue = LocalContext.blocks.get(None)._queue
        waiting = [event for line in list(queue.event_queue_per_concurrency_id.values()) for event in list(line.queue)]
        started = [event for job in list(queue.active_jobs) if job for event in job]
    except AttributeError:
        return []
    mine = (event for event in waiting + started if event.session_hash == session)
    return [event._id for event in mine if event.concurrency_id == GPU_QUEUE]


def stopped_while_queued() -> bool:
    """Whether the job now starting was stopped while it waited (forgets the mark)."""
    from gradio.context import LocalContext

    event_id = LocalContext.event_id.get(None)
    return event_id is not None and _STOPPED_WHILE_QUEUED.pop(event_id, None) is not None


def stopped_before_starting() -> tuple[list, dict] | None:
    """The (gallery, info) answer of a job stopped while it waited in the queue (with a notice), else None."""
    if not stopped_while_queued():
        return None
    gr.Info("Stopped before it started")
    return [], {"interrupted": True, "stopped_after_step": 0, "stopped_while_queued": True}


async def stop(request: gr.Request = None) -> None:
    """Ask this session's running job to stop after its current step, and its queued jobs not to start. On the event
    loop, so that the queue cannot move a job between the waiting and the started ones while they are read."""
    session = session_of(request)
    now = time.monotonic()
    for event_id, marked in list(_STOPPED_WHILE_QUEUED.items()):
        if now - marked > _QUEUED_STOP_MAX_AGE:
            _STOPPED_WHILE_QUEUED.pop(event_id, None)
    # Marks first, then the token: a job between the two finds one or the other (job_token takes its token first).
    for event_id in _pending_event_ids(session):
        _STOPPED_WHILE_QUEUED[event_id] = now
    STOP_FLAGS.stop(session)
