"""What the server costs while it waits, and what a generation costs beside it: Gradio's queue polling every
millisecond (its default on Linux) against the studio's 10 ms (`STUDIO_QUEUE_POLL_SECONDS`).

    python bench/idle_cpu.py                 # 30 s idle, then 3 unconditional requests, per setting
    python bench/idle_cpu.py --seconds 60 --requests 5

Each setting starts `python app.py` (offline: the bundled emoji models are the defaults), lets it settle, reads its
CPU time (user + system, /proc) over `--seconds` of idleness, then times `--requests` /unconditional requests of 20
steps through gradio_client. The settings alternate in one run; printed as a markdown table. Linux only.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTINGS = {"Gradio's default (1 ms)": "0.001", "studio (10 ms)": "0.01"}


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_app(poll_seconds: str) -> tuple[subprocess.Popen, str]:
    """`python app.py` offline on a free port with the queue polling every `poll_seconds`; (process, URL) once it
    answers."""
    port = free_port()
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "STUDIO_QUEUE_POLL_SECONDS": poll_seconds,
    }
    process = subprocess.Popen(
        [sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return process, url
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError("app.py did not start")


def measure(poll_seconds: str, idle_seconds: float, requests: int) -> tuple[float, float]:
    """(idle CPU share of one core, mean seconds per request) for one setting."""
    from gradio_client import Client

    process, url = start_app(poll_seconds)
    try:
        client = Client(url, verbose=False)
        client.predict(steps=2, seed=0, api_name="/unconditional")  # loads the model
        time.sleep(5)  # settle
        before = cpu_seconds(process.pid)
        time.sleep(idle_seconds)
        idle_share = (cpu_seconds(process.pid) - before) / idle_seconds
        start = time.perf_counter()
        for seed in range(requests):
            client.predict(steps=20, seed=seed, previews=False, api_name="/unconditional")
        return idle_share, (time.perf_counter() - start) / max(requests, 1)
    finally:
        process.terminate()
        process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="idle time measured per setting")
    parser.add_argument("--requests", type=int, default=3, help="timed /unconditional requests per setting")
    args = parser.parse_args()
    rows = {name: measure(value, args.seconds, args.requests) for name, value in SETTINGS.items()}
    print("| queue polling | idle CPU (share of one core) | seconds per request (20 steps) |")
    print("|---|---|---|")
    for name, (idle_share, per_request) in rows.items():
        print(f"| {name} | {idle_share:.1%} | {per_request:.2f} |")


if __name__ == "__main__":
    main()
