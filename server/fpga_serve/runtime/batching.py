"""Dynamic batching that wraps a pipeline (it does not live inside one).

Requests from any protocol and any client queue per model; a worker thread forms a batch as soon
as it reaches ``max_size`` items (``BatchingConfig``, core/types.py: the device batch, not a
request's own ``max_batch_size``), hits a preferred size, or the oldest request has waited
``max_queue_delay_us``. Requests whose deadline has passed or whose client went away are dropped
before they reach the device. A full queue answers ``Overloaded`` (RESOURCE_EXHAUSTED).

Up to ``concurrency`` batches of a model execute at once (TF Serving's ``num_batch_threads``):
with 2, the host's part of one batch (preprocessing, quantisation, transfer, postprocessing)
overlaps the device's part of another. The device itself still runs one program at a time (its
lock, hw/base.py), so the second batch waits there; one worker forms batches at a time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field

import numpy as np

from fpga_serve.core.errors import (
    DeadlineExceeded,
    FpgaServeError,
    InvalidInput,
    Overloaded,
    Status,
)
from fpga_serve.core.types import BatchingConfig

log = logging.getLogger(__name__)

RunBatch = Callable[[list[np.ndarray]], list[np.ndarray]]


def _never() -> bool:
    return False


def shape_key(inputs: Sequence[np.ndarray]) -> tuple[tuple[tuple[int, ...], str], ...]:
    """What must match for requests to share a batch: every input's dtype and dimensions
    after the batch dimension (rows of width 3 and 4 cannot be concatenated)."""
    return tuple((a.shape[1:], a.dtype.str) for a in inputs)


@dataclass(eq=False)  # hashed by identity (the set of active requests)
class _Pending:
    inputs: list[np.ndarray]
    size: int
    deadline: float | None
    cancelled: Callable[[], bool]
    future: Future[list[np.ndarray]] = field(default_factory=Future)
    enqueued: float = field(default_factory=time.monotonic)
    key: tuple[tuple[tuple[int, ...], str], ...] = ()

    def __post_init__(self) -> None:
        self.key = shape_key(self.inputs)


class BatchObserver:
    """Metrics hooks; the default does nothing."""

    def queued(self, depth: int) -> None:
        """Called with the queue depth after every change."""

    def batch(self, size: int, requests: int, queue_seconds: Sequence[float]) -> None:
        """Called when a batch is dispatched."""

    def dropped(self, reason: str) -> None:
        """Called for each request dropped before execution ("deadline" or "cancelled")."""


class Batcher:
    """Queues requests for one model and runs them in batches on ``concurrency`` worker threads."""

    def __init__(
        self,
        run: RunBatch,
        config: BatchingConfig,
        observer: BatchObserver | None = None,
        name: str = "model",
    ) -> None:
        self._run = run
        self.config = config
        self._observer = observer or BatchObserver()
        self._queue: deque[_Pending] = deque()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)  # workers with nothing to do wait here
        self._grow = threading.Condition(self._lock)  # the worker forming a batch waits here
        self._closing = False
        self._running = 0  # batches executing (on workers or inline)
        self._active: set[_Pending] = set()  # requests in batches executing on workers
        self._forming = False  # a worker is gathering a batch (waiting for size or delay)
        self._workers = [
            threading.Thread(target=self._loop, name=f"batcher-{name}-{i}", daemon=True)
            for i in range(config.concurrency)
        ]
        for worker in self._workers:
            worker.start()

    def submit(
        self,
        inputs: list[np.ndarray],
        deadline: float | None = None,
        cancelled: Callable[[], bool] = _never,
    ) -> Future[list[np.ndarray]]:
        """Queue one request (already validated); ``deadline`` is a time.monotonic() value."""
        pending = _Pending(inputs, int(inputs[0].shape[0]), deadline, cancelled)
        if self._admit(lambda: pending) is None:
            # A free slot, an empty queue and no delay to wait for: run in the caller's thread,
            # sparing the hand-off to a worker (the lone-request latency). It holds the slot.
            try:
                if self._still_wanted(pending):
                    self._execute([pending])
            finally:
                self._release(worker=False)
        return pending.future

    def run(
        self,
        inputs: list[np.ndarray],
        deadline: float | None = None,
        cancelled: Callable[[], bool] = _never,
    ) -> list[np.ndarray]:
        """``submit(...).result()``: the request's outputs, or its error raised. Inline (a free
        slot, no delay) it skips the queued item (its Future, its shape key) altogether."""
        size = int(inputs[0].shape[0])
        queued = self._admit(lambda: _Pending(inputs, size, deadline, cancelled))
        if queued is not None:
            return queued.future.result()
        try:
            unwanted = self._unwanted(deadline, cancelled)
            if unwanted is not None:
                raise unwanted
            self._observer.batch(size, 1, (0.0,))
            return self._run(inputs)
        finally:
            self._release(worker=False)

    def _admit(self, queue: Callable[[], _Pending]) -> _Pending | None:
        """Claim a free slot for a request (None: the caller runs it now), or queue it as
        ``queue()`` makes it (returned)."""
        with self._lock:
            if self._closing:
                raise FpgaServeError("the model is being unloaded", Status.UNAVAILABLE)
            if len(self._queue) >= self.config.max_queue_size:
                raise Overloaded(
                    f"queue full ({self.config.max_queue_size} requests waiting); retry later"
                )
            free = self._running < self.config.concurrency
            if free and not self._queue and self.config.max_queue_delay_us == 0:
                self._running += 1
                return None
            pending = queue()
            self._queue.append(pending)
            self._observer.queued(len(self._queue))
            if self._forming:
                self._grow.notify()  # the batch being gathered may now be full
            elif free:
                # With every slot taken no worker could act on a wake-up; whoever ends a batch
                # looks at the queue (see _release).
                self._idle.notify()
            return pending

    def _release(self, worker: bool) -> None:
        """A batch has ended: a slot is free. A releasing worker looks at the queue itself;
        otherwise an idle worker is woken when there is queued work."""
        with self._lock:
            self._running -= 1
            if not worker and (self._queue or self._closing):
                self._idle.notify()

    def abort(self, error: BaseException) -> int:
        """Stop taking requests and answer every request waiting on this batcher with
        ``error`` now: queued ones, and those in batches still executing on a worker (their
        results, when they come, are dropped). Requests running inline, in their caller's
        thread, cannot be answered from here. Returns how many were answered."""
        with self._lock:
            self._closing = True
            waiting = list(self._queue) + list(self._active)
            self._queue.clear()
            self._observer.queued(0)
            self._idle.notify_all()
            self._grow.notify_all()
        answered = 0
        for pending in waiting:
            answered += _settle(pending.future, error=error)
        return answered

    def runs_at_once(self) -> bool:
        """Whether a request submitted now would run at once in its caller's thread (a free
        slot, nothing queued, no queue delay): a look without the lock, which ``run`` and
        ``submit`` take again to decide."""
        return (
            self.config.max_queue_delay_us == 0
            and self._running < self.config.concurrency
            and not self._queue
        )

    def depth(self) -> int:
        with self._lock:
            return len(self._queue)

    def close(self, drain: bool = True, timeout: float | None = None) -> None:
        """Stop taking requests; with ``drain`` finish the queued ones, else fail them."""
        with self._lock:
            self._closing = True
            if not drain:
                while self._queue:
                    _settle(
                        self._queue.popleft().future,
                        error=FpgaServeError("the model was unloaded", Status.UNAVAILABLE),
                    )
            self._idle.notify_all()
            self._grow.notify_all()
        end = None if timeout is None else time.monotonic() + timeout
        for worker in self._workers:
            worker.join(None if end is None else max(0.0, end - time.monotonic()))

    # The worker ---------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                live = [p for p in batch if self._still_wanted(p)]
                if live:
                    self._execute(live)
            finally:
                with self._lock:
                    self._active.difference_update(batch)
                self._release(worker=True)

    def _next_batch(self) -> list[_Pending] | None:
        cfg = self.config
        with self._lock:
            while not self._queue or self._running >= cfg.concurrency or self._forming:
                if self._closing and not self._queue:
                    return None
                self._idle.wait()
            self._forming = True
            head = self._queue[0]
            flush_at = head.enqueued + cfg.max_queue_delay_us / 1e6
            while not self._closing:
                size = sum(p.size for p in self._queue if p.key == head.key)
                if size >= cfg.max_size or size in cfg.preferred_sizes:
                    break
                remaining = flush_at - time.monotonic()
                if remaining <= 0:
                    break
                self._grow.wait(remaining)
            batch = self._take_batch(head.key)
            self._active.update(batch)
            self._observer.queued(len(self._queue))
            self._forming = False
            self._running += 1
            if self._queue and self._running < cfg.concurrency:
                self._idle.notify()  # another slot is free: the next batch can start forming
            elif self._closing and not self._queue:
                self._idle.notify_all()  # drained: workers still waiting for a slot may exit
            return batch

    def _take_batch(self, key: tuple[tuple[tuple[int, ...], str], ...]) -> list[_Pending]:
        """Under the lock: the oldest request and, in order, the queued ones of the same shape
        key that fit beside it; the others stay queued, in order, for the next batch."""
        batch: list[_Pending] = []
        kept: list[_Pending] = []
        total = 0
        while self._queue:
            pending = self._queue.popleft()
            fits = not batch or total + pending.size <= self.config.max_size
            if pending.key == key and fits:
                batch.append(pending)
                total += pending.size
            else:
                kept.append(pending)
                if pending.key == key:  # the batch is full; keep the rest in order
                    break
        self._queue.extendleft(reversed(kept))
        return batch

    def _still_wanted(self, pending: _Pending) -> bool:
        if not pending.future.set_running_or_notify_cancel():
            self._observer.dropped("cancelled")
            return False
        unwanted = self._unwanted(pending.deadline, pending.cancelled)
        if unwanted is not None:
            _settle(pending.future, error=unwanted)
            return False
        return True

    def _unwanted(
        self, deadline: float | None, cancelled: Callable[[], bool]
    ) -> FpgaServeError | None:
        """Why a request must not reach the device (counted as dropped), or None."""
        if deadline is not None and time.monotonic() >= deadline:
            self._observer.dropped("deadline")
            return DeadlineExceeded("deadline passed while queued")
        if cancelled():
            self._observer.dropped("cancelled")
            return FpgaServeError("cancelled by the client", Status.CANCELLED)
        return None

    def _execute(self, batch: list[_Pending]) -> None:
        now = time.monotonic()
        self._observer.batch(
            sum(p.size for p in batch), len(batch), [now - p.enqueued for p in batch]
        )
        try:
            if len(batch) == 1:
                outputs_per = [self._run(batch[0].inputs)]
            else:
                columns = zip(*(p.inputs for p in batch), strict=True)
                joined = [np.concatenate(parts) for parts in columns]
                outputs = self._run(joined)
                outputs_per = _split(outputs, [p.size for p in batch])
        except InvalidInput as exc:
            if len(batch) == 1:
                self._fail(batch, exc)
                return
            # One request's bad data must not fail its neighbours: run each alone.
            for pending in batch:
                self._execute_one(pending)
            return
        except BaseException as exc:  # device faults etc. fail the whole batch, never hang it
            self._fail(batch, exc)
            return
        for pending, outs in zip(batch, outputs_per, strict=True):
            _settle(pending.future, outs)

    def _execute_one(self, pending: _Pending) -> None:
        try:
            result = self._run(pending.inputs)
        except BaseException as exc:
            _settle(pending.future, error=exc)
        else:
            _settle(pending.future, result)

    @staticmethod
    def _fail(batch: list[_Pending], exc: BaseException) -> None:
        for pending in batch:
            _settle(pending.future, error=exc)


def _settle(
    future: Future[list[np.ndarray]],
    result: list[np.ndarray] | None = None,
    error: BaseException | None = None,
) -> int:
    """Answer a request once: 1 if this answered it, 0 if it was answered already (cut off at
    shutdown while its batch ran, then the batch finished)."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result or [])
    except InvalidStateError:
        return 0
    return 1


def _split(outputs: list[np.ndarray], sizes: list[int]) -> list[list[np.ndarray]]:
    bounds = np.cumsum(sizes)[:-1]
    per_output = [np.split(out, bounds) for out in outputs]
    return [list(parts) for parts in zip(*per_output, strict=True)]
