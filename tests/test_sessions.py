"""Sessions against a hostile or busy server: Stop answered while the queue is full, no endpoint run outside the
queue, an empty session hash refused, little memory per new session, idle sessions forgotten; on a server with a
queue of 2 and the tiny models."""

import datetime
import time
import uuid

import httpx
import pytest
from gradio_client import Client

from tests.conftest import SERVERS, running_app, tiny_model_settings

QUEUE_SIZE = 2


@pytest.fixture(scope="module")
def small_queue_server(tiny_models, tmp_path_factory):
    """`python app.py` on the tiny models with room for QUEUE_SIZE waiting jobs."""
    settings = {
        **tiny_model_settings(tiny_models, tmp_path_factory),
        "STUDIO_QUEUE_SIZE": str(QUEUE_SIZE),
        "STUDIO_MAX_MEGAPIXEL_STEPS": "100",  # room for jobs that outlast any number of round trips
    }
    with running_app(settings, tmp_path_factory) as url:
        yield url


def _long_job(client: Client, model: str, seed: int):
    """A job of the tiny model long enough to be stopped (1000 steps of 8 images), without previews so that
    `status()` shows its progress."""
    return client.submit(model=model, steps=1000, batch_size=8, seed=seed, previews=False, api_name="/unconditional")


def _wait_until(condition, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


def _queue_size(server: str) -> int:
    return httpx.get(f"{server}gradio_api/queue/status").json()["queue_size"]


def _step(job) -> int:
    progress = job.status().progress_data
    return (progress[0].index or 0) if progress else 0


def _rest_call(server: str, api_name: str, data: list, session: str) -> str:
    """The event id of a REST call in `session`."""
    response = httpx.post(f"{server}gradio_api/call/{api_name}", json={"data": data, "session_hash": session})
    response.raise_for_status()
    return response.json()["event_id"]


def test_stop_is_answered_and_reaches_only_its_session_while_others_fill_the_queue(small_queue_server, tiny_models):
    server, model = small_queue_server, tiny_models["unet"]
    owner, first, second = (Client(server, verbose=False) for _ in range(3))
    try:
        running = _long_job(owner, model, seed=1)
        _wait_until(lambda: _step(running) > 0 or running.done(), "the owner's job runs")
        waiting = []
        for client, seed in ((first, 2), (second, 3)):  # one after the other: the first waits first
            waiting.append(_long_job(client, model, seed))
            _wait_until(lambda: _queue_size(server) == len(waiting), "the others' jobs fill the queue")
        late = httpx.post(f"{server}gradio_api/call/unconditional", json={"data": [model, "DDIM", 5, 1, 4, 0.0]})
        assert late.status_code == 503 and "Queue is full" in late.text

        # gradio_client's /stop, from a session whose job waits: answered, and the owner's job goes on.
        first.predict(api_name="/stop")
        step = _step(running)
        _wait_until(lambda: _step(running) > step, "the owner's job goes on after another session's Stop", timeout=30)
        assert not running.done() and _queue_size(server) == QUEUE_SIZE  # still full

        # REST /call/stop with the owner's session hash: answered at once, and the owner's job ends within a step.
        _rest_call(server, "stop", [], owner.session_hash)
        _, info = running.result(timeout=60)
        assert info["interrupted"] is True and info["stopped_after_step"] < 1000
        gallery, info = waiting[0].result(timeout=60)
        assert gallery == [] and info["stopped_while_queued"] is True
        second.predict(api_name="/stop")  # its job waits or has just started: either way it ends now
        _, info = waiting[1].result(timeout=60)
        assert info["interrupted"] is True
    finally:  # whatever failed, leave no long job behind for the next tests
        for client in (owner, first, second):
            httpx.post(f"{server}gradio_api/call/stop", json={"data": [], "session_hash": client.session_hash})


def test_an_empty_session_hash_is_refused_with_a_400(small_queue_server):
    for route, body in (("call/stop", {"data": []}), ("queue/join", {"data": [], "fn_index": 0})):
        response = httpx.post(f"{small_queue_server}gradio_api/{route}", json={**body, "session_hash": ""})
        assert response.status_code == 400 and "session_hash must not be empty" in response.text
    # The server goes on answering (the refused event left nothing broken in the queue).
    event_id = _rest_call(small_queue_server, "stop", [], "after-the-refusals")
    with httpx.stream("GET", f"{small_queue_server}gradio_api/call/stop/{event_id}", timeout=60) as response:
        assert "event: complete" in "".join(response.iter_lines())


def test_no_endpoint_runs_outside_the_queue(small_queue_server, tiny_models):
    """Gradio's direct route (/run/<endpoint>, open by default off Spaces) would skip the queue's limit and the
    one-job-at-a-time GPU slot: it is closed."""
    data = [tiny_models["unet"], "DDIM", 2, 1, 4, 0.0, 1, False]  # every input: it would run
    for api_name, body in (("unconditional", {"data": data}), ("stop", {"data": [], "session_hash": "direct"})):
        response = httpx.post(f"{small_queue_server}gradio_api/run/{api_name}", json=body, timeout=60)
        assert response.status_code == 404 and "join the queue" in response.text


def _rss_megabytes(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def _new_sessions(server: str, count: int) -> None:
    """`count` callers with sessions of their own, each a REST /stop and a /read_parameters, results read."""
    with httpx.Client(base_url=f"{server}gradio_api/", timeout=60) as http:
        for _ in range(count):
            session = uuid.uuid4().hex
            for api_name, data in (("stop", []), ("read_parameters", [None])):
                response = http.post(f"call/{api_name}", json={"data": data, "session_hash": session})
                http.get(f"call/{api_name}/{response.raise_for_status().json()['event_id']}").read()


def _settled_rss_megabytes(pid: int) -> float:
    """The least of a few readings a moment apart (a request still being answered is not counted)."""
    readings = []
    for _ in range(3):
        time.sleep(0.2)
        readings.append(_rss_megabytes(pid))
    return min(readings)


def test_new_sessions_cost_little_memory(small_queue_server):
    """300 new sessions grow the server by less than 40 MB (Gradio's own session copy of the page was about
    600 KB each). Warmed up first, so that one-time allocations do not count."""
    pid = SERVERS[small_queue_server]["pid"]
    _new_sessions(small_queue_server, 60)
    before = _settled_rss_megabytes(pid)
    _new_sessions(small_queue_server, 300)
    after = _settled_rss_megabytes(pid)
    assert after - before < 40, f"300 new sessions took {after - before:.0f} MB"


def test_lean_sessions_list_the_same_configs_as_gradios(configured):
    """A lean session (configs built when asked for) lists what Gradio's eager copy lists, before and after the
    session changes a value and a component, and has every attribute Gradio's has."""
    from gradio.state_holder import SessionState

    import app
    from ui.sessions import LeanSessionState

    eager, lean = SessionState(app.demo), LeanSessionState(app.demo)
    assert set(vars(eager)) <= set(vars(lean)) and lean.config_values == {}
    assert list(lean.components) == list(eager.components)
    info = next(key for key, block in app.demo.blocks.items() if type(block).__name__ == "JSON")
    for state in (eager, lean):
        state._update_value_in_config(info, {"seed": 7})  # what an answer does to its output
    assert list(lean.components) == list(eager.components)
    for state in (eager, lean):
        state[info] = type(app.demo.blocks[info])(label="Changed", render=False)  # what gr.update(label=...) does
    assert list(lean.components) == list(eager.components)


def test_idle_sessions_and_the_queues_leftovers_are_forgotten_unless_a_job_waits_or_runs(configured):
    from types import SimpleNamespace

    import app
    from ui.sessions import LEFTOVER_GRACE_SECONDS, StudioStateHolder

    holder = StudioStateHolder()
    holder.blocks, holder.capacity = app.demo, 3  # not set_blocks: that would make it the page's store
    for session in ("a", "b", "c", "d"):
        holder[session]
    assert list(holder.session_data) == ["b", "c", "d"]  # bounded: the least recently used went
    queue = SimpleNamespace(  # "a" was evicted with an undelivered answer; "c" and "e" have a job in the queue
        event_ids_to_events={"1": SimpleNamespace(session_hash="c"), "2": SimpleNamespace(session_hash="e")},
        pending_messages_per_session={session: [] for session in "abcde"},
        pending_event_ids_session={"a": {"0"}, "b": set(), "c": {"1"}, "d": set(), "e": {"2"}},
    )
    holder.blocks = SimpleNamespace(_queue=queue)
    holder.time_last_used["d"] = datetime.datetime.now() + datetime.timedelta(hours=2)
    later = datetime.datetime.now() + datetime.timedelta(seconds=holder.idle_seconds + 1)
    assert holder.forget_idle(later) == ["b"]
    assert list(holder.session_data) == ["c", "d"]
    # An evicted session's undelivered answers stay a while for its caller to fetch, then go.
    assert set(queue.pending_messages_per_session) == set(queue.pending_event_ids_session) == set("abcde")
    assert holder.forget_idle(later + datetime.timedelta(seconds=LEFTOVER_GRACE_SECONDS)) == []
    assert set(queue.pending_messages_per_session) == set(queue.pending_event_ids_session) == {"c", "d", "e"}
