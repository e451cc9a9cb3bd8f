"""Per-session stop flags: the Stop button sets one, the running job checks it after every step."""

from __future__ import annotations

import threading


class StopFlags:
    """One threading.Event per session id."""

    def __init__(self) -> None:
        self._events: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def start(self, session: str) -> threading.Event:
        """A cleared flag for a job starting in `session`."""
        with self._lock:
            event = self._events.setdefault(session, threading.Event())
            event.clear()
            return event

    def stop(self, session: str) -> bool:
        """Ask the job running in `session` to stop; True if there was one to ask."""
        with self._lock:
            event = self._events.get(session)
        if event is None:
            return False
        event.set()
        return True


STOP_FLAGS = StopFlags()
