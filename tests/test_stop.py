"""Stop for jobs still in the queue, and Stop over the plain REST API (`/gradio_api/call/...`), on tiny models."""

import json
import time

import httpx
from gradio_client import Client


def _wait_until_running(job, timeout: float = 60) -> None:
    """Wait for the job's first progress report (jobs here run with previews=False: a preview's update would
    replace the progress that `status()` shows)."""
    deadline = time.monotonic() + timeout
    while not (job.status().progress_data or job.done()):
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.05)


def _rest_result(server: str, api_name: str, event_id: str) -> tuple[str, object]:
    """(last event name, its data) of a REST call's result stream."""
    event, data = None, None
    with httpx.stream("GET", f"{server}gradio_api/call/{api_name}/{event_id}", timeout=120) as response:
        for line in response.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event in ("complete", "error"):
                data = json.loads(line.split(":", 1)[1])
                break
    return event, data


def _rest_call(server: str, api_name: str, data: list, session: str) -> str:
    response = httpx.post(f"{server}gradio_api/call/{api_name}", json={"data": data, "session_hash": session})
    response.raise_for_status()
    return response.json()["event_id"]


def test_a_stop_while_queued_cancels_that_job_and_not_the_running_one(server, tiny_models):
    first, second = Client(server, verbose=False), Client(server, verbose=False)
    running = first.submit(model=tiny_models["unet"], steps=1000, seed=1, previews=False, api_name="/unconditional")
    _wait_until_running(running)
    queued = second.submit(model=tiny_models["unet"], steps=1000, seed=2, previews=False, api_name="/unconditional")
    time.sleep(0.3)  # B is behind A: one generation at a time
    second.predict(api_name="/stop")
    progress = running.status().progress_data[0].index
    time.sleep(0.3)
    assert not running.done() and running.status().progress_data[0].index > progress  # A goes on
    first.predict(api_name="/stop")
    _, info = running.result(timeout=60)
    assert info["interrupted"] is True and "stopped_while_queued" not in info
    gallery, info = queued.result(timeout=60)
    assert gallery == [] and info == {"interrupted": True, "stopped_after_step": 0, "stopped_while_queued": True}


def test_a_rest_caller_stops_its_job_by_sending_the_same_session_hash(server, tiny_models):
    blocker = Client(server, verbose=False)
    running = blocker.submit(model=tiny_models["unet"], steps=1000, seed=1, previews=False, api_name="/unconditional")
    _wait_until_running(running)
    # Queued behind the blocker: /stop with the same session_hash cancels it before it starts.
    queued = _rest_call(server, "unconditional", [tiny_models["unet"], "DDIM", 1000, 1, 5, 0.0], "rest-caller-1")
    time.sleep(0.3)
    _rest_call(server, "stop", [], "rest-caller-1")
    blocker.predict(api_name="/stop")
    event, data = _rest_result(server, "unconditional", queued)
    # Never ran: Gradio ends the queued event itself (empty output), or the app does (its info says so).
    assert event == "complete" and data in (
        [],
        [[], {"interrupted": True, "stopped_after_step": 0, "stopped_while_queued": True}],
    )
    # Running: a stop (sent a few times, as a client would retry) ends it within a step. Gradio may end the event
    # itself (empty output, or "error" with no data: how its REST route reports a cancelled event).
    started = _rest_call(server, "unconditional", [tiny_models["unet"], "DDIM", 1000, 1, 6, 0.0], "rest-caller-2")
    for _ in range(10):
        time.sleep(0.2)
        _rest_call(server, "stop", [], "rest-caller-2")
    event, data = _rest_result(server, "unconditional", started)
    assert event == "error" or data == [] or data[1]["interrupted"] is True
    gallery, info = blocker.predict(model=tiny_models["unet"], steps=2, seed=3, api_name="/unconditional")
    assert info["interrupted"] is False and len(gallery) == 1


def test_a_stop_reaches_a_job_taken_from_the_queue_before_it_holds_a_token():
    """Between leaving Gradio's queue and taking its stop token (preprocessing, the handler's first lines) a job is
    neither waiting nor stoppable by its token: Stop marks it, and the token it then takes is already set."""
    import asyncio
    from types import SimpleNamespace

    from gradio.context import LocalContext

    from ui import jobs

    started = SimpleNamespace(_id="taken-1", session_hash="s1", concurrency_id=jobs.GPU_QUEUE)
    other = SimpleNamespace(_id="taken-2", session_hash="s2", concurrency_id=jobs.GPU_QUEUE)
    queue = SimpleNamespace(event_queue_per_concurrency_id={}, active_jobs=[[started], None, [other]])
    blocks = LocalContext.blocks.set(SimpleNamespace(_queue=queue))
    try:
        asyncio.run(jobs.stop(SimpleNamespace(session_hash="s1")))
        assert "taken-2" not in jobs._STOPPED_WHILE_QUEUED  # another session's job is not touched
        event = LocalContext.event_id.set("taken-1")
        try:
            with jobs.job_token(SimpleNamespace(session_hash="s1")) as token:
                assert token.is_set()
        finally:
            LocalContext.event_id.reset(event)
        assert "taken-1" not in jobs._STOPPED_WHILE_QUEUED  # forgotten with the job
    finally:
        LocalContext.blocks.reset(blocks)
