"""Several clients at once, and many requests in a row, against `python app.py` on tiny models."""

import glob
import os
import threading
import time

import numpy as np
import pytest
from gradio_client import Client

from tests.conftest import OUTPUT_MAX_FILES, SERVERS, gallery_pixels

CLIENTS, REQUESTS_EACH = 6, 3


def _request(models, client_index: int, request_index: int) -> dict:
    """A distinct small request per (client, request): seeds, steps, batch and model vary."""
    model = models["unet"] if (client_index + request_index) % 2 else models["unet_v"]
    return dict(
        model=model,
        steps=3 + request_index,
        batch_size=1 + client_index % 2,
        seed=100 * client_index + 7 * request_index,
    )


def test_six_clients_at_once_get_what_each_would_get_alone_and_a_stop_stays_with_its_client(server, tiny_models):
    clients = [Client(server, verbose=False, download_files=False) for _ in range(CLIENTS)]
    jobs = {
        (c, r): clients[c].submit(**_request(tiny_models, c, r), api_name="/unconditional")
        for r in range(REQUESTS_EACH)
        for c in range(CLIENTS)
    }
    bystander = Client(server, verbose=False, download_files=False)
    bystander.predict(api_name="/stop")  # a stop from a client with no job stops no one else's
    concurrent = {key: job.result(timeout=120) for key, job in jobs.items()}
    alone = Client(server, verbose=False, download_files=False)
    for (c, r), (gallery, info) in concurrent.items():
        assert info["interrupted"] is False, (c, r)
        expected, _ = alone.predict(**_request(tiny_models, c, r), api_name="/unconditional")
        for got, want in zip(gallery_pixels(gallery), gallery_pixels(expected), strict=True):
            np.testing.assert_array_equal(got, want)


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="reads /proc")
def test_a_hundred_requests_leave_memory_descriptors_and_the_output_folder_bounded(server, tiny_models):
    pid, outputs = SERVERS[server]["pid"], SERVERS[server]["outputs"]

    def burst(count: int, clients: int = 4) -> None:
        """`count` requests, sent by `clients` new sessions side by side (the server still runs one at a time)."""

        def send(first: int) -> None:
            client = Client(server, verbose=False, download_files=False)
            for seed in range(first, count, clients):
                client.predict(model=tiny_models["unet"], steps=1, batch_size=1, seed=seed, api_name="/unconditional")

        senders = [threading.Thread(target=send, args=(index,)) for index in range(clients)]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join(timeout=300)

    burst(12)  # warm-up: caches, lazily imported modules, allocator pools
    rss, fds = _rss_kb(pid), _open_fds(pid)
    started = time.monotonic()
    burst(100)
    elapsed = time.monotonic() - started
    grown_kb, fd_change = _rss_kb(pid) - rss, _open_fds(pid) - fds
    print(f"100 requests: {elapsed:.1f} s, RSS {rss / 1024:.0f} MB +{grown_kb / 1024:.1f} MB, fds {fds} {fd_change:+d}")
    assert grown_kb < 25 * 1024, grown_kb  # a per-request leak of the smallest image (~250 KB) would show as 25 MB
    assert fd_change <= 4, fd_change
    pngs = glob.glob(os.path.join(outputs, "*", "*.png"))  # one folder per PNG, named for its download
    assert 0 < len(pngs) <= OUTPUT_MAX_FILES
    assert threading.active_count() < 50
