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
    Status,
)
from fpga_serve.core.types import BatchingConfig
from fpga_serve.runtime.batching import Batcher, BatchObserver
from waiting import holds_for, wait_until

NEVER_US = 600_000_000
"""A queue delay no test waits out: a batch dispatched early was cut short by its company."""


class Gated:
    """A fake model whose batches can be held at a gate (open until cleared); ``started`` is
    set when a batch reaches it."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()

    def __call__(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        self.started.set()
        self.gate.wait(10)
        return self.compute(arrays[0])

    def compute(self, x: np.ndarray) -> list[np.ndarray]:
        raise NotImplementedError


class GatedModel(Gated):
    """Doubles its input and records every batch."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[float]] = []

    def compute(self, x: np.ndarray) -> list[np.ndarray]:
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


def gathering(batcher: Batcher) -> bool:
    """A worker is forming a batch (waiting for company or the queue delay)."""
    return batcher._forming


def closing(batcher: Batcher) -> bool:
    return batcher._closing


def hold_first(model: GatedModel, batcher: Batcher) -> object:
    """Occupy the worker with one request so that later ones queue up behind it."""
    model.gate.clear()
    model.started.clear()
    first = batcher.submit(item(0))
    assert model.started.wait(5)
    return first


def test_requests_queued_while_busy_form_one_batch() -> None:
    model, rec = GatedModel(), Recorder()
    batcher = Batcher(model, BatchingConfig(max_size=8, max_queue_delay_us=1000), rec)
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
    batcher = Batcher(model, BatchingConfig(max_size=4, max_queue_delay_us=1000), Recorder())
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
        BatchingConfig(max_size=8, max_queue_delay_us=NEVER_US, preferred_sizes=(2,)),
    )
    a = batcher.submit(item(1))
    wait_until(lambda: gathering(batcher))
    b = batcher.submit(item(2))
    a.result(30)
    b.result(30)
    # Joined although the first was already waiting, and dispatched at the preferred size, not
    # after the queue delay (which no result() here waits out).
    assert model.batches == [[1, 2]]
    batcher.close()


def test_expired_and_cancelled_requests_never_reach_the_model() -> None:
    model, rec = GatedModel(), Recorder()
    batcher = Batcher(model, BatchingConfig(max_size=8, max_queue_delay_us=1000), rec)
    first = hold_first(model, batcher)
    deadline = time.monotonic() + 0.01
    expired = batcher.submit(item(5), deadline=deadline)
    gone = batcher.submit(item(6), cancelled=lambda: True)
    kept = batcher.submit(item(7))
    wait_until(lambda: time.monotonic() > deadline)  # it expires while queued
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
    batcher = Batcher(model, BatchingConfig(max_size=1, max_queue_delay_us=1000, max_queue_size=2))
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
    batcher = Batcher(model, BatchingConfig(max_size=8, max_queue_delay_us=1000))
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
    batcher = Batcher(model, BatchingConfig(max_size=2, max_queue_delay_us=1000))
    first = hold_first(model, batcher)
    queued = [batcher.submit(item(i)) for i in range(1, 4)]
    closer = threading.Thread(target=batcher.close)
    closer.start()
    wait_until(lambda: closing(batcher))  # closed with all three still queued
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

    batcher = Batcher(run, BatchingConfig(max_size=8, max_queue_delay_us=0))
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

    batcher = Batcher(run, BatchingConfig(max_size=8, max_queue_delay_us=0), rec)
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
    wait_until(lambda: batcher.depth() == 2)  # both queue behind the held one
    model.gate.set()
    for t in (holder, *waiting):
        t.join(5)
    assert answers == {2: [4], 3: [6]}
    assert sorted(model.batches[-1]) == [2, 3] and threads[-1].startswith("batcher-")
    batcher.close()


class CountingModel(GatedModel):
    """A gated model that records how many batches were inside it at once."""

    def __init__(self) -> None:
        super().__init__()
        self.active = 0
        self.most = 0
        self._count = threading.Lock()

    def __call__(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        with self._count:
            self.active += 1
            self.most = max(self.most, self.active)
        try:
            return super().__call__(arrays)
        finally:
            with self._count:
                self.active -= 1


@pytest.mark.parametrize("concurrency", [1, 2, 3])
def test_concurrency_bounds_the_batches_executing_at_once(concurrency: int) -> None:
    model = CountingModel()
    model.gate.clear()
    config = BatchingConfig(max_size=2, max_queue_delay_us=1000, concurrency=concurrency)
    batcher = Batcher(model, config)
    futures = [batcher.submit(item(i)) for i in range(1, 9)]
    rest = 8 - 2 * concurrency  # the rest wait in the queue, in batches of 2
    wait_until(lambda: model.active == concurrency and batcher.depth() == rest)
    # and no extra batch is admitted beside them while they run
    assert holds_for(lambda: model.active == concurrency and batcher.depth() == rest, 0.05)
    model.gate.set()
    assert [f.result(5)[0].tolist() for f in futures] == [[2 * i] for i in range(1, 9)]
    assert model.most == concurrency
    assert sorted(v for b in model.batches for v in b) == list(range(1, 9))  # each exactly once
    batcher.close()


@pytest.mark.parametrize("concurrency", [1, 2])
def test_a_batch_being_gathered_is_cut_as_soon_as_it_fills(concurrency: int) -> None:
    model = GatedModel()
    batcher = Batcher(
        model,
        BatchingConfig(max_size=2, max_queue_delay_us=NEVER_US, concurrency=concurrency),
    )
    a = batcher.submit(item(1))
    wait_until(lambda: gathering(batcher))  # a worker waits for company
    b = batcher.submit(item(2))
    # woken by the arrival that filled it: the queue delay would outlast these result()s
    assert [a.result(30)[0].tolist(), b.result(30)[0].tolist()] == [[2], [4]]
    assert model.batches == [[1, 2]]
    batcher.close()


def test_with_two_slots_the_second_lone_request_also_runs_inline() -> None:
    threads: list[str] = []
    model = CountingModel()

    def run(arrays: list[np.ndarray]) -> list[np.ndarray]:
        threads.append(threading.current_thread().name)
        return model(arrays)

    batcher = Batcher(run, BatchingConfig(max_size=8, max_queue_delay_us=0, concurrency=2))
    model.gate.clear()
    model.started.clear()
    assert batcher.runs_at_once()
    holder = threading.Thread(target=lambda: batcher.run(item(0)), name="holder")
    holder.start()
    assert model.started.wait(5)
    assert batcher.runs_at_once()  # one slot is still free
    second = threading.Thread(target=lambda: batcher.run(item(1)), name="second")
    second.start()
    wait_until(lambda: len(threads) == 2)
    assert threads == ["holder", "second"] and batcher.depth() == 0  # both slots, no queue
    assert not batcher.runs_at_once()  # (an event loop must not run it: it would wait)
    third = batcher.submit(item(2))  # both slots taken: this one queues for a worker
    # no worker runs it beside the two
    assert holds_for(lambda: batcher.depth() == 1 and model.active == 2, 0.05)
    model.gate.set()
    holder.join(5)
    second.join(5)
    assert third.result(5)[0].tolist() == [4]
    assert threads[-1].startswith("batcher-") and model.most == 2
    wait_until(batcher.runs_at_once)  # the worker's slot is free again
    batcher.close()


def test_with_a_queue_delay_no_request_runs_at_once() -> None:
    batcher = Batcher(CountingModel(), BatchingConfig(max_size=8, max_queue_delay_us=1))
    assert not batcher.runs_at_once()  # it waits to gather others
    batcher.close()


def test_a_free_slot_starts_the_next_batch_while_one_runs() -> None:
    model = CountingModel()
    model.gate.clear()
    batcher = Batcher(model, BatchingConfig(max_size=2, max_queue_delay_us=NEVER_US, concurrency=2))
    first = batcher.submit(item(1))
    wait_until(lambda: gathering(batcher))  # one worker gathers a batch around it
    rest = [batcher.submit(item(i)) for i in (2, 3, 4)]
    wait_until(lambda: model.active == 2)  # [1, 2] runs and the full [3, 4] did not wait for it
    model.gate.set()
    assert [f.result(5)[0].tolist() for f in (first, *rest)] == [[2], [4], [6], [8]]
    assert sorted(map(sorted, model.batches)) == [[1, 2], [3, 4]]
    batcher.close()


@pytest.mark.parametrize("concurrency", [1, 2])
def test_close_with_several_workers_drains_then_stops_them_all(concurrency: int) -> None:
    model = GatedModel()
    model.gate.clear()
    config = BatchingConfig(max_size=1, max_queue_delay_us=1000, concurrency=concurrency)
    batcher = Batcher(model, config)
    futures = [batcher.submit(item(i)) for i in range(1, 6)]
    closer = threading.Thread(target=batcher.close)
    closer.start()
    wait_until(lambda: closing(batcher))
    model.gate.set()
    closer.join(5)
    assert not closer.is_alive()
    assert [f.result(0)[0].tolist() for f in futures] == [[2 * i] for i in range(1, 6)]
    assert not any(w.is_alive() for w in batcher._workers)
    with pytest.raises(InvalidInput, match="bad batching"):
        BatchingConfig(concurrency=0)


def test_close_stops_a_worker_that_was_waiting_while_another_gathered() -> None:
    model = GatedModel()
    batcher = Batcher(model, BatchingConfig(max_size=4, max_queue_delay_us=NEVER_US, concurrency=2))
    lone = batcher.submit(item(1))
    wait_until(lambda: gathering(batcher))  # one worker gathers around it; the other waits
    batcher.close(timeout=30)  # cuts the gathered batch short and drains it
    assert lone.result(0)[0].tolist() == [2]
    assert not any(w.is_alive() for w in batcher._workers)  # neither is left waiting


def test_the_server_setting_reaches_every_models_batcher(monkeypatch: pytest.MonkeyPatch) -> None:
    from fpga_serve.adapters.server import Server
    from fpga_serve.core.settings import ServerSettings

    assert ServerSettings().batch_concurrency == 1  # the default: one batch at a time
    monkeypatch.setenv("FPGA_SERVE_BATCH_CONCURRENCY", "2")
    server = Server(ServerSettings(metrics_port=-1))
    assert server.registry.batching is not None
    assert server.registry.batching.concurrency == 2


class RowSums(Gated):
    """A model over rows of any width: each row's sum; records the shape of every batch."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def compute(self, x: np.ndarray) -> list[np.ndarray]:
        self.shapes.append(x.shape)
        return [x.sum(axis=1, keepdims=True)]


def test_only_requests_whose_other_dimensions_match_share_a_batch() -> None:
    """Finding 4 of issue 10: rows of widths 3-6 queued together must not be concatenated
    into one batch (which failed all of them); each width forms its own batches, in order."""
    model = RowSums()
    batcher = Batcher(model, BatchingConfig(max_size=8, max_queue_delay_us=1000))
    model.gate.clear()
    first = batcher.submit([np.ones((1, 2), np.float32)])
    assert model.started.wait(5)
    widths = [3, 4, 3, 5, 6, 4, 3, 6, 5, 5, 3, 4]
    futures = [batcher.submit([np.full((1, w), w, np.float32)]) for w in widths]
    model.gate.set()
    first.result(5)
    for w, fut in zip(widths, futures, strict=True):
        assert fut.result(5)[0].tolist() == [[w * w]]
    batches = model.shapes[1:]
    assert sum(s[0] for s in batches) == len(widths)
    assert len(batches) == len(set(widths))  # one batch per width: all were queued together
    assert [s[1] for s in batches] == [3, 4, 5, 6]  # in the order of each width's first request
    batcher.close()


def test_a_mixed_queue_never_waits_for_company_it_cannot_have() -> None:
    """The batch being gathered counts only requests it could take: a queue full of other
    widths does not end the wait early, nor does one width's request delay another's past
    the queue delay (here one no test waits out: the first batch ends only when it fills)."""
    model = RowSums()
    batcher = Batcher(model, BatchingConfig(max_size=4, max_queue_delay_us=NEVER_US))
    first = batcher.submit([np.ones((1, 3), np.float32)])
    wait_until(lambda: gathering(batcher))
    fours = [batcher.submit([np.ones((1, 4), np.float32)]) for _ in range(4)]  # a full batch
    assert holds_for(lambda: not first.done() and not model.shapes, 0.05)  # still waiting
    threes = [batcher.submit([np.ones((1, 3), np.float32)]) for _ in range(3)]  # it fills
    for fut in [first, *threes, *fours]:
        fut.result(30)  # the full batch of fours went next, with no queue delay of its own
    assert model.shapes == [(4, 3), (4, 4)]
    batcher.close()


def test_abort_answers_queued_and_executing_requests_now_and_drops_late_results() -> None:
    """Shutdown's cut: the batch on the worker and the queue are answered with the error at
    once; the batch's result, when it comes, is dropped; nothing else is accepted."""
    model = GatedModel()
    batcher = Batcher(model, BatchingConfig(max_size=2, max_queue_delay_us=1))
    model.gate.clear()
    model.started.clear()
    executing = batcher.submit(item(1))  # a delay > 0: queued, run on a worker
    assert model.started.wait(5)
    queued = [batcher.submit(item(2)), batcher.submit(item(3))]
    error = FpgaServeError("shutting down", Status.UNAVAILABLE)
    assert batcher.abort(error) == 3
    for fut in [executing, *queued]:
        with pytest.raises(FpgaServeError, match="shutting down"):
            fut.result(1)
    model.gate.set()  # the batch ends; its result has nobody to go to
    wait_until(lambda: model.batches and batcher._running == 0)
    assert "shutting down" in str(executing.exception(0))  # the late result was dropped
    with pytest.raises(FpgaServeError, match="unloaded"):
        batcher.submit(item(4))
    batcher.close(timeout=5)
