"""The client side of an ingest run: item results handed over in queue order with a bounded window."""
from __future__ import annotations

import threading

from ofa.ingest.job import _results_in_order

N, WINDOW = 9, 3
#: shared with the tasks, which run in this process (Dask pickles functions by reference)
FINISHED = [threading.Event() for _ in range(N)]
ORDER: list[int] = []


def _task(i: int) -> int:
    """The last task of each window finishes first, the others after their successor."""
    if (i + 1) % WINDOW:
        assert FINISHED[i + 1].wait(60), f"task {i + 1} never finished"
    ORDER.append(i)
    FINISHED[i].set()
    return i * i


def test_results_come_in_queue_order_within_the_window():
    """Tasks finishing in reverse within each window are handed over 0, 1, 2, ...; no more than the
    window are ever submitted and not yet handed over."""
    from dask.distributed import Client

    submitted: list[int] = []
    got: list[tuple[int, int]] = []

    def submit(i: int):
        submitted.append(i)
        assert len(submitted) - len(got) <= WINDOW, f"{len(submitted) - len(got)} open with a window of {WINDOW}"
        return client.submit(_task, i, key=f"t-{i}", pure=False)

    with Client(processes=False, n_workers=1, threads_per_worker=WINDOW, dashboard_address=None) as client:
        for i, result in _results_in_order(client, N, WINDOW, submit):
            got.append((i, result))
    assert got == [(i, i * i) for i in range(N)] and submitted == list(range(N))
    assert ORDER == [2, 1, 0, 5, 4, 3, 8, 7, 6]  # they really finished out of order
