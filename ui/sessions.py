"""The server's sessions, around Gradio's internals: Stop joins even a full queue, every session keeps little memory,
their number is bounded and idle ones are forgotten, and an empty session hash is refused with a 400."""

from __future__ import annotations

import datetime
import functools
from collections.abc import Iterator
from types import SimpleNamespace

import gradio as gr
from gradio import routes
from gradio.state_holder import SessionState, StateHolder

from pipelines.config import setting


def session_capacity() -> int:
    """Sessions kept in memory at most (`STUDIO_SESSION_CAPACITY`, default 1000): beyond it the least recently used
    is forgotten. Gradio's default is 10,000."""
    return setting("STUDIO_SESSION_CAPACITY", 1000, minimum=1)


IDLE_SECONDS = 3600.0
LEFTOVER_GRACE_SECONDS = 60.0  # an evicted session's undelivered answers are kept this long for its caller


def session_idle_seconds() -> float:
    """How long a session without a request is kept (`STUDIO_SESSION_IDLE_SECONDS`, default IDLE_SECONDS)."""
    return setting("STUDIO_SESSION_IDLE_SECONDS", IDLE_SECONDS, minimum=1, kind=float)


def guard_queue(demo: gr.Blocks, exempt_api_names: tuple[str, ...]) -> None:
    """Let the events named `exempt_api_names` (Stop) join a full queue, and refuse an empty session hash (400).

    Gradio's `Queue.push` refuses any event once `max_size` events wait, whatever their concurrency group, so a
    Stop sent while others' jobs fill the queue would be answered 503; the same limit is applied here to every
    other event instead. An empty session hash would leave a broken event in the queue and answer 500. Gradio has no
    public hook for either: its private queue's `push` is wrapped."""
    queue = demo._queue
    limit, queue.max_size = queue.max_size, None
    exempt = {fn_id for fn_id, fn in demo.fns.items() if fn.api_name in exempt_api_names}
    push = queue.push

    @functools.wraps(push)
    async def push_with_limit(body, *args, **kwargs) -> tuple[bool, object, str]:
        if body.session_hash == "":
            return False, "session_hash must not be empty: send a string of your own, or none", "error"
        if limit is not None and body.fn_index not in exempt and len(queue) >= limit:
            return False, f"Queue is full. Max size is {limit} and size is {len(queue)}.", "queue_full"
        return await push(body, *args, **kwargs)

    queue.push = push_with_limit


class LeanSessionState(SessionState):
    """A session's state without Gradio's eager copy of every block's config (the page has hundreds of blocks):
    only the configs of blocks the session used are kept, the others are built when asked for (deep links)."""

    def __init__(self, blocks: gr.Blocks) -> None:
        super().__init__(SimpleNamespace(default_config=blocks.default_config, blocks={}))
        self._page_blocks = blocks.blocks  # shared, not copied: which blocks Gradio's copy would list

    @property
    def components(self) -> Iterator[dict]:
        """Every block's config, as Gradio's eager copy would list them."""
        blocks = self.blocks_config.blocks
        for key in [*blocks, *(key for key in self.config_values if key not in blocks)]:
            config = self.config_values.get(key)
            if config is None and key in self._page_blocks:
                config = self.blocks_config.config_for_block(key, [], blocks[key])
            if config:
                yield config


class StudioStateHolder(StateHolder):
    """Gradio's session store with lean sessions. Its once-a-second sweep also forgets the sessions idle for
    `idle_seconds`, and what the queue still holds for sessions no longer kept, a minute after (Gradio keeps an
    undelivered session's messages and event ids after its state is evicted); never a session whose job waits or
    runs."""

    idle_seconds: float = IDLE_SECONDS

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.unkept_since: dict[str, datetime.datetime] = {}  # session no longer kept -> when first seen so

    def __getitem__(self, session_id: str) -> SessionState:
        if session_id not in self.session_data:
            self.session_data[session_id] = LeanSessionState(self.blocks)
        return super().__getitem__(session_id)

    def delete_all_expired_state(self) -> None:
        super().delete_all_expired_state()
        self.forget_idle(datetime.datetime.now())

    def forget_idle(self, now: datetime.datetime) -> list[str]:
        """Forget the sessions idle since before `now - idle_seconds` and the queue's leftovers of sessions no
        longer kept, except sessions with a job in the queue; returns the idle sessions forgotten."""
        queue = getattr(self.blocks, "_queue", None)
        busy = {event.session_hash for event in list(getattr(queue, "event_ids_to_events", {}).values())}
        oldest = now - datetime.timedelta(seconds=self.idle_seconds)
        idle = [session for session, used in list(self.time_last_used.items()) if used < oldest and session not in busy]
        with self.lock:
            for session in idle:
                self.session_data.pop(session, None)
                self.time_last_used.pop(session, None)
        if queue is not None:
            leftovers = {*queue.pending_event_ids_session, *queue.pending_messages_per_session}
            unkept = {session for session in leftovers if session not in self.session_data and session not in busy}
            self.unkept_since = {session: self.unkept_since.get(session, now) for session in unkept}
            grace = datetime.timedelta(seconds=min(self.idle_seconds, LEFTOVER_GRACE_SECONDS))
            for session, since in list(self.unkept_since.items()):
                if now - since >= grace:  # time enough for its caller to fetch an answer
                    queue.pending_event_ids_session.pop(session, None)
                    queue.pending_messages_per_session.pop(session, None)
                    del self.unkept_since[session]
        return idle


def keep_sessions_small(idle_seconds: float) -> None:
    """Make the apps created from now on (`launch()`) keep lean sessions and forget idle ones; with launch's
    `state_session_capacity` this bounds the memory that sessions hold."""
    StudioStateHolder.idle_seconds = idle_seconds
    routes.StateHolder = StudioStateHolder
