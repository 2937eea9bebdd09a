"""The twin in a process of its own, beside the server, as a board sits beside its host.

The twin's native path hands the GIL back and forth dozens of times per batch (every GEMM and
kernel call releases it); inside a busy server each hand-off waits for the RPC threads, and a
batch ran 1.6-2x slower than the same batch alone (bench/README.md, #5). In a worker process the
twin has a GIL of its own: per batch the host pickles the input into a pipe, blocks without the
GIL, and unpickles the result, like a driver waiting for DONE.

Programs are uploaded once (``load``), run by id, and freed (``close``). Errors keep their type
across the pipe (an InvalidInput raised in the worker is an InvalidInput here; a bug in the twin
is INTERNAL, not a device fault). If the worker dies, calls raise DeviceError and ``alive`` says
so; ``reset`` starts a new worker and uploads the programs again.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import os
import threading
import time
from collections.abc import MutableMapping
from multiprocessing.connection import Connection
from typing import Any

from fpga_serve.core import errors
from fpga_serve.core.errors import DeviceError, FpgaServeError, Status
from fpga_serve.core.isa import Program

RESTART_TIMEOUT_S = 5.0
"""How long ``restart`` lets the old worker exit before it kills it."""
WORKER_SPINCOUNT = 50_000
"""GOMP_SPINCOUNT in the twin's worker process, unless its environment sets one: how many
times an OpenMP thread of the fused VNNI kernel polls for more work before it sleeps. At
libgomp's default (300,000 when OMP_WAIT_POLICY is unset; the team was seen spinning ~10 ms
after a run) the worker's second thread spun after every run beside the host's TensorFlow
stages: at 1 in flight the worker used 33-36 ms of CPU a request for a ~13 ms two-thread run,
and 26-31 ms with 50,000, which still spans the gaps between a run's parallel regions (Table
3 within 1.15x; bench/README.md, issue 13)."""
STOP_TIMEOUT_S = 0.1
"""How long ``stop`` (at shutdown) waits for a run in progress to end and the worker to exit,
in all, before it kills the process: work still running then was cut off already."""


def _describe(exc: BaseException) -> tuple[str, str, str]:
    """An error as (class name, status, message) for the pipe."""
    if isinstance(exc, FpgaServeError):
        return type(exc).__name__, exc.status.value, exc.message
    return "FpgaServeError", Status.INTERNAL.value, f"{type(exc).__name__}: {exc}"


def _rebuild(kind: str, status: str, message: str) -> FpgaServeError:
    """The host's copy of an error the worker raised: the same class when core.errors has it,
    with the same status."""
    cls = getattr(errors, kind, None)
    if not (isinstance(cls, type) and issubclass(cls, FpgaServeError)):
        cls = FpgaServeError
    return cls(f"twin worker: {message}", Status(status))


def openmp_env(environ: MutableMapping[str, str]) -> None:
    """The worker's OpenMP settings: GOMP_SPINCOUNT = WORKER_SPINCOUNT where ``environ`` has
    none (an operator's own value is kept)."""
    environ.setdefault("GOMP_SPINCOUNT", str(WORKER_SPINCOUNT))


def _serve(
    conn: Connection, native: bool | None, threads: int
) -> None:  # pragma: no cover - child process
    """The worker's loop: (op, program id, payload) -> ("ok", value) | ("error", (class name,
    status, message))."""
    openmp_env(os.environ)  # before the kernels' OpenMP runtime loads and reads it
    from fpga_serve.hw.twin.device import TwinDevice
    from fpga_serve.hw.twin.gemm import set_twin_threads

    set_twin_threads(threads)

    device: TwinDevice | None = None
    programs: dict[int, Any] = {}
    while True:
        try:
            op, program_id, payload = conn.recv()
        except (EOFError, OSError):
            return
        try:
            if device is None:  # built here so that its refusal reaches the host as an error
                device = TwinDevice(native=native)
            if op == "native":
                result: Any = device.native
            elif op == "load":
                programs[program_id] = device.load(payload)
                result = programs[program_id].path
            elif op == "run":
                result = programs[program_id].run(payload)
            elif op == "close":
                programs.pop(program_id).close()
                result = None
            else:
                return
            conn.send(("ok", result))
        except Exception as exc:  # reported with its type; the worker keeps serving
            conn.send(("error", _describe(exc)))


class TwinWorker:
    """The host's side of the pipe to one worker process (calls are serialised)."""

    def __init__(self, native: bool | None, threads: int = 0) -> None:
        self.native = native
        self.threads = threads
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._start()

    def _start(self) -> None:
        ctx = multiprocessing.get_context("spawn")  # no fork of a threaded server
        self._conn, child = ctx.Pipe()
        self.process = ctx.Process(
            target=_serve,
            args=(child, self.native, self.threads),
            name="fpga-serve-twin",
            daemon=True,
        )
        self.process.start()
        child.close()

    def alive(self) -> bool:
        return self.process.is_alive()

    def call(self, op: str, program_id: int, payload: Any = None) -> Any:
        with self._lock:
            return self._call(op, program_id, payload)

    def _call(self, op: str, program_id: int, payload: Any) -> Any:
        """One request and its answer; the caller holds the lock."""
        try:
            self._conn.send((op, program_id, payload))
            status, value = self._conn.recv()
        except (EOFError, OSError) as exc:
            code = self.process.exitcode
            raise DeviceError(f"the twin's worker process died (exit code {code})") from exc
        if status != "ok":
            raise _rebuild(*value)
        return value

    def new_id(self) -> int:
        return next(self._ids)

    def restart(self, programs: dict[int, Program]) -> None:
        """A new worker with ``programs`` uploaded again; no call runs meanwhile."""
        with self._lock:
            self._end(RESTART_TIMEOUT_S)
            self._start()
            for program_id, program in programs.items():
                self._call("load", program_id, program)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """End the worker: after the run in progress if that ends within ``timeout``, else at
        once (the run then fails with DeviceError)."""
        end = time.monotonic() + max(0.0, timeout)
        locked = self._lock.acquire(timeout=max(0.0, timeout))
        try:
            self._end(max(0.0, end - time.monotonic()) if locked else 0.0)
        finally:
            if locked:
                self._lock.release()

    def _end(self, timeout: float) -> None:
        if self.process.is_alive() and timeout > 0:
            with contextlib.suppress(OSError):
                self._conn.send(("exit", 0, None))
            self.process.join(timeout=timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self._conn.close()
