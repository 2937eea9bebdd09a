"""Dynamic batching: batch forming, deadlines, cancellation, bounded queue, fault isolation."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from fpga_serve.core.errors import (
    DeadlineExceeded,
    DeviceError,
    FpgaServeError,
    InvalidInput,
    Overloaded,
)
from fpga_serve.runtime.batching import Batcher, BatchingConfig, BatchObserver


class GatedModel:
    """A fake model: doubles its input, records every batch, can be held at a gate."""

    def __init__(self) -> None:
        self.batches: list[list[float]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()

    def __call__(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        self.started.set()
        self.gate.wait(10)
        x = arrays[0]
        self.batches.append(x.tolist())
        if np.any(x < 0):
            raise InvalidInput(f"negative value in {x.tolist()}")
        if np.any(x == 999):
            raise DeviceError("device fault")
        return [x * 2]


class Recorder(BatchObserver):
    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.drops: list[str] = []

    def batch(self, size: int, requests: int, queue_seconds: object) -> None:
        self.sizes.append(size)

    def dropped(self, reason: str) -> None:
        self.drops.append(reason)


def item(*values: float) -> list[np.ndarray]:
    return [np.array(values, dtype=np.float32)]


def hold_first(model: GatedModel, batcher: Batcher) -> object:
    """Occupy the worker with one request so that later ones queue up behind it."""
    model.gate.clear()
    model.started.clear()
    first = batcher.submit(item(0))
    assert model.started.wait(5)
    return first


def test_requests_queued_while_busy_form_one_batch() -> None:
    model, rec = GatedModel(), Recorder()
    batcher = Batcher(model, BatchingConfig(max_batch_size=8), rec)
    first = hold_first(model, batcher)
    futures = [batcher.submit(item(i, i + 0.5)) for i in range(1, 4)]
    model.gate.set()
    assert first.result(5)[0].tolist() == [0]  # type: ignore[attr-defined]
    for i, fut in enumerate(futures, start=1):
        assert fut.result(5)[0].tolist() == [2 * i, 2 * i + 1]
    assert model.batches[1] == [1, 1.5, 2, 2.5, 3, 3.5]
    assert rec.sizes == [1, 6]
    batcher.close()


def test_batch_never_exceeds_max_and_requests_are_not_split() -> None:
    model = GatedModel()
    batcher = Batcher(model, BatchingConfig(max_batch_size=4), Recorder())
    first = hold_first(model, batcher)
    futures = [batcher.submit(item(i, i)) for i in range(1, 6)]
    model.gate.set()
    first.result(5)  # type: ignore[attr-defined]
    for fut in futures:
        fut.result(5)
    assert [len(b) for b in model.batches[1:]] == [4, 4, 2]
    batcher.close()


def test_queue_delay_waits_for_company_and_preferred_size_cuts_it_short() -> None:
    model = GatedModel()
    batcher = Batcher(
        model,
        BatchingConfig(max_batch_size=8, max_queue_delay_us=2_000_000, preferred_batch_sizes=(2,)),
    )
    start = time.monotonic()
    a = batcher.submit(item(1))
    time.sleep(0.05)
    b = batcher.submit(item(2))
    a.result(5)
    b.result(5)
    # Joined although 50 ms apart, and dispatched at the preferred size, not after 2 s.
    assert model.batches == [[1, 2]]
    assert time.monotonic() - start < 1.5
    batcher.close()


def test_expired_and_cancelled_requests_never_reach_the_model() -> None:
    model, rec = GatedModel(), Recorder()
    batcher = Batcher(model, BatchingConfig(max_batch_size=8), rec)
    first = hold_first(model, batcher)
    expired = batcher.submit(item(5), deadline=time.monotonic() + 0.01)
    gone = batcher.submit(item(6), cancelled=lambda: True)
    kept = batcher.submit(item(7))
    time.sleep(0.05)
    model.gate.set()
    first.result(5)  # type: ignore[attr-defined]
    with pytest.raises(DeadlineExceeded):
        expired.result(5)
    with pytest.raises(FpgaServeError, match="cancelled"):
        gone.result(5)
    assert kept.result(5)[0].tolist() == [14]
    assert all(5 not in b and 6 not in b for b in model.batches)
    assert sorted(rec.drops) == ["cancelled", "deadline"]
    batcher.close()


def test_full_queue_is_refused_with_overloaded() -> None:
    model = GatedModel()
    batcher = Batcher(model, BatchingConfig(max_batch_size=1, max_queue_size=2))
    first = hold_first(model, batcher)
    queued = [batcher.submit(item(1)), batcher.submit(item(2))]
    with pytest.raises(Overloaded, match="queue full"):
        batcher.submit(item(3))
    model.gate.set()
    first.result(5)  # type: ignore[attr-defined]
    assert [f.result(5)[0].tolist() for f in queued] == [[2], [4]]
    batcher.close()


def test_bad_request_fails_alone_and_device_fault_fails_its_batch() -> None:
    model = GatedModel()
    batcher = Batcher(model, BatchingConfig(max_batch_size=8))
    first = hold_first(model, batcher)
    good = batcher.submit(item(1))
    bad = batcher.submit(item(-1))
    model.gate.set()
    first.result(5)  # type: ignore[attr-defined]
    assert good.result(5)[0].tolist() == [2]
    with pytest.raises(InvalidInput, match="negative"):
        bad.result(5)

    first = hold_first(model, batcher)
    faulty = [batcher.submit(item(999)), batcher.submit(item(3))]
    model.gate.set()
    first.result(5)  # type: ignore[attr-defined]
    for fut in faulty:
        with pytest.raises(DeviceError):
            fut.result(5)
    assert batcher.submit(item(4)).result(5)[0].tolist() == [8]  # still serving
    batcher.close()


def test_close_drains_queued_work_and_then_refuses() -> None:
    model = GatedModel()
    batcher = Batcher(model, BatchingConfig(max_batch_size=2))
    first = hold_first(model, batcher)
    queued = [batcher.submit(item(i)) for i in range(1, 4)]
    closer = threading.Thread(target=batcher.close)
    closer.start()
    time.sleep(0.05)
    model.gate.set()
    closer.join(5)
    first.result(5)  # type: ignore[attr-defined]
    assert [f.result(0)[0].tolist() for f in queued] == [[2], [4], [6]]
    with pytest.raises(FpgaServeError, match="unloaded"):
        batcher.submit(item(1))


def test_idle_model_runs_a_lone_request_inline_and_batches_under_load() -> None:
    threads: list[str] = []
    model = GatedModel()

    def run(arrays: list[np.ndarray]) -> list[np.ndarray]:
        threads.append(threading.current_thread().name)
        return model(arrays)

    batcher = Batcher(run, BatchingConfig(max_batch_size=8, max_queue_delay_us=0))
    assert batcher.submit(item(1)).result(5)[0].tolist() == [2]
    assert threads == [threading.current_thread().name]  # no hand-off to the worker

    model.gate.clear()
    model.started.clear()
    holder = threading.Thread(target=lambda: batcher.submit(item(0)), name="holder")
    holder.start()
    assert model.started.wait(5)
    queued = [batcher.submit(item(i)) for i in (2, 3, 4)]  # the model is busy: they queue
    model.gate.set()
    holder.join(5)
    assert [f.result(5)[0].tolist() for f in queued] == [[4], [6], [8]]
    assert model.batches[-1] == [2, 3, 4]
    assert threads[1] == "holder" and threads[-1].startswith("batcher-")
    batcher.close()


def test_run_answers_inline_or_from_the_queue_and_drops_like_submit() -> None:
    threads: list[str] = []
    model, rec = GatedModel(), Recorder()

    def run(arrays: list[np.ndarray]) -> list[np.ndarray]:
        threads.append(threading.current_thread().name)
        return model(arrays)

    batcher = Batcher(run, BatchingConfig(max_batch_size=8, max_queue_delay_us=0), rec)
    assert batcher.run(item(1))[0].tolist() == [2]
    assert threads == [threading.current_thread().name] and rec.sizes == [1]
    with pytest.raises(DeadlineExceeded):
        batcher.run(item(5), deadline=time.monotonic() - 1)
    with pytest.raises(FpgaServeError, match="cancelled"):
        batcher.run(item(6), cancelled=lambda: True)
    with pytest.raises(InvalidInput, match="negative"):
        batcher.run(item(-1))  # the model's own error, raised to the caller
    assert rec.drops == ["deadline", "cancelled"]
    assert [5] not in model.batches and [6] not in model.batches

    model.gate.clear()
    model.started.clear()
    holder = threading.Thread(target=lambda: batcher.run(item(0)), name="holder")
    holder.start()
    assert model.started.wait(5)
    answers: dict[int, list[float]] = {}
    waiting = [
        threading.Thread(target=lambda v=v: answers.update({v: batcher.run(item(v))[0].tolist()}))
        for v in (2, 3)
    ]
    for t in waiting:
        t.start()
    give_up = time.monotonic() + 5
    while batcher.depth() < 2 and time.monotonic() < give_up:  # both queue behind the held one
        time.sleep(0.001)
    model.gate.set()
    for t in (holder, *waiting):
        t.join(5)
    assert answers == {2: [4], 3: [6]}
    assert sorted(model.batches[-1]) == [2, 3] and threads[-1].startswith("batcher-")
    batcher.close()
