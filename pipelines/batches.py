"""Batch count: several batches of one request in a row, seeds continuing (the app's and the batch command's)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from pipelines.limits import check_total, server_limits
from pipelines.params import PIXEL
from pipelines.validation import checked

MAX_BATCH_COUNT = PIXEL["batch_count"].high


def batch_requests(validate: Callable, request, batch_count) -> list:
    """The checked requests of `batch_count` batches in a row, seeds continuing (batch k starts at seed + k x batch
    size), all validated before the first runs, and refused together when their sum is above the compute limits."""
    count = checked("batch_count", batch_count, PIXEL["batch_count"])
    first = validate(request)
    jobs = [first] + [validate(replace(first, seed=first.seed + index * first.batch_size)) for index in range(1, count)]
    check_total([job.work() for job in jobs], server_limits(), "batches", "batch_count, steps, batch_size or the size")
    return jobs
