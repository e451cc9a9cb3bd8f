"""Job threads: reused between jobs (PyTorch's per-thread cuDNN plan caches stay warm), one per concurrent job,
and fresh ones in a forked worker."""

import multiprocessing
import threading

from pipelines.jobs import StepDone, stream_job


def thread_of(request, on_step, should_stop):
    """A fake job: one step, then the ident of the thread it ran on (waiting on `request` first if it is an Event)."""
    if isinstance(request, threading.Event):
        assert request.wait(10)
    on_step(1, 1)
    return threading.get_ident()


def result_of(events) -> int:
    *steps, result = list(events)
    assert steps == [StepDone(1, 1)]
    return result


def test_consecutive_jobs_run_on_one_reused_thread_that_is_not_the_callers():
    first, second = result_of(stream_job(thread_of, None)), result_of(stream_job(thread_of, None))
    assert first == second != threading.get_ident()


def test_a_job_started_while_another_runs_gets_its_own_thread():
    release = threading.Event()
    blocked = stream_job(thread_of, release)
    started = threading.Thread(target=lambda: next(blocked))  # the first job now waits on `release`
    started.start()
    other = result_of(stream_job(thread_of, None))  # does not wait behind the blocked job
    release.set()
    started.join()
    assert next(blocked) != other


def _in_child(answers) -> None:
    answers.put(result_of(stream_job(thread_of, None)))


def test_a_forked_worker_runs_jobs_on_threads_of_its_own():
    parent = result_of(stream_job(thread_of, None))  # the parent has a job thread before the fork
    answers = multiprocessing.get_context("fork").SimpleQueue()
    child = multiprocessing.get_context("fork").Process(target=_in_child, args=(answers,))
    child.start()
    child.join(30)
    assert child.exitcode == 0 and isinstance(answers.get(), int) and parent
