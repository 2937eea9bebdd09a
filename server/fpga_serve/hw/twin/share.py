"""One kernel call's output rows shared between the calling thread and helper threads, when
the call is large enough to gain from it (``bind``).

The rows are cut into a few chunks per thread and every thread claims chunks until none are
left, the caller included, so the caller waits only for chunks a helper has already begun: a
helper that a busy machine has not scheduled yet costs nothing (it finds the call finished),
where a fixed split waits for it (bench/README.md, bench_twin: 2.79x ONNX Runtime int8 at
load 11 with a fixed split). ONNX Runtime's own pool does the same for its GEMMs (a task a
worker has not started is taken back by the caller).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fpga_serve.hw.twin.gemm import twin_threads

SPLIT_ELEMENTS = 1 << 21
"""Below this many output elements (rows x channels) a call runs on the calling thread: the
hand-off to the pool (~50 us) and the helper's cold cache cost more than the second core gains
(bench/README.md, bench_twin: a requantisation of 12544 x 64 took 0.12 ms on one thread and
0.14 ms shared, of 50176 x 64 0.49 and 0.30 ms)."""
CHUNKS_PER_THREAD = 4
_POOL: list[ThreadPoolExecutor] = []  # made on first use
_POOL_LOCK = threading.Lock()


class _Call:
    """The chunks of one call, claimed in order; ``done`` is set when the last one finishes."""

    def __init__(self, kernel: Callable[..., None], args: tuple[Any, ...], bounds: list[int]):
        self.kernel, self.args, self.bounds = kernel, args, bounds
        self.claimed = 0
        self.left = len(bounds) - 1
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.error: BaseException | None = None

    def _claim(self) -> int | None:
        with self.lock:
            if self.claimed == len(self.bounds) - 1:
                return None
            self.claimed += 1
            return self.claimed - 1

    def work(self) -> None:
        while (i := self._claim()) is not None:
            try:
                self.kernel(*self.args, self.bounds[i], self.bounds[i + 1])
            except BaseException as exc:  # raised again in the calling thread
                self.error = exc
            with self.lock:
                self.left -= 1
                if self.left == 0:
                    self.done.set()


def _pool(helpers: int) -> ThreadPoolExecutor:
    with _POOL_LOCK:
        if not _POOL:
            _POOL.append(ThreadPoolExecutor(helpers, thread_name_prefix="twin"))
        return _POOL[0]


def bind(kernel: Callable[..., None], rows: int, width: int, *args: Any) -> Callable[[], None]:
    """A call of kernel(*args, r0, r1) over [0, rows) of ``width`` elements each: on this
    thread below SPLIT_ELEMENTS elements or with one twin thread, else ``split``."""
    if rows * width < SPLIT_ELEMENTS or twin_threads() == 1:
        return functools.partial(kernel, *args, 0, rows)
    return functools.partial(split, kernel, rows, *args)


def split(kernel: Callable[..., None], rows: int, *args: Any) -> None:
    """kernel(*args, r0, r1) over [0, rows) in chunks claimed by this thread and
    twin_threads() - 1 helpers (all on this thread with one twin thread)."""
    parts = twin_threads()
    if parts == 1:
        kernel(*args, 0, rows)
        return
    chunks = parts * CHUNKS_PER_THREAD
    call = _Call(kernel, args, [rows * i // chunks for i in range(chunks + 1)])
    pool = _pool(parts - 1)
    for _ in range(parts - 1):
        pool.submit(call.work)
    call.work()
    call.done.wait()
    if call.error is not None:
        raise call.error
