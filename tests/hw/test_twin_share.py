"""The twin's row sharing (hw/twin/share.py): every row exactly once, errors raised in the
caller, and a caller that never waits for a helper thread the machine has not scheduled."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from fpga_serve.hw.twin import gemm, share


@pytest.fixture(autouse=True)
def two_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(gemm._THREADS, "threads", 2)  # as set_twin_threads(2), undone after


def test_every_row_once_in_several_chunks() -> None:
    counts = np.zeros(10_001, np.int64)
    calls: list[tuple[int, int]] = []

    def kernel(out: np.ndarray, r0: int, r1: int) -> None:
        out[r0:r1] += 1
        calls.append((r0, r1))

    share.split(kernel, len(counts), counts)
    assert (counts == 1).all()
    assert len(calls) == 2 * share.CHUNKS_PER_THREAD
    share.split(kernel, 100, counts[:100])  # fewer rows than chunks: still every row once
    assert (counts[:100] == 2).all()


def test_bind_shares_only_calls_of_at_least_split_elements() -> None:
    """A bound call below SPLIT_ELEMENTS (rows x width) is one call on this thread; at it, the
    rows are shared in chunks; with one twin thread, never."""
    calls: list[tuple[int, int]] = []

    def kernel(r0: int, r1: int) -> None:
        calls.append((r0, r1))

    width = 64
    rows = share.SPLIT_ELEMENTS // width
    share.bind(kernel, rows - 1, width)()
    assert calls == [(0, rows - 1)]
    calls.clear()
    share.bind(kernel, rows, width)()
    assert len(calls) == 2 * share.CHUNKS_PER_THREAD
    assert sorted(calls)[0][0] == 0 and sorted(calls)[-1][1] == rows
    calls.clear()
    gemm.set_twin_threads(1)
    share.bind(kernel, rows, width)()
    assert calls == [(0, rows)]


def test_a_helper_that_never_starts_costs_nothing() -> None:
    """Every helper busy elsewhere: the caller does all the chunks itself and returns (a fixed
    split would wait for the helper's share forever)."""
    pool = share._pool(1)
    release = threading.Event()
    for _ in range(pool._max_workers):
        pool.submit(release.wait)
    done: list[str] = []
    counts = np.zeros(8192, np.int64)

    def kernel(out: np.ndarray, r0: int, r1: int) -> None:
        out[r0:r1] += 1
        done.append(threading.current_thread().name)

    caller = threading.Thread(target=share.split, args=(kernel, len(counts), counts))
    caller.start()
    caller.join(timeout=20)
    finished = not caller.is_alive()
    release.set()
    caller.join()
    assert finished
    assert (counts == 1).all() and set(done) == {caller.name}


def test_an_error_in_any_chunk_reaches_the_caller() -> None:
    def kernel(r0: int, r1: int) -> None:
        if r0 > 0:
            raise ValueError(f"rows {r0}-{r1}")

    with pytest.raises(ValueError, match="rows"):
        share.split(kernel, 4096)
