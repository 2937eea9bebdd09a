"""The twin in a process of its own, beside the server, as a board sits beside its host.

The twin's native path hands the GIL back and forth dozens of times per batch (every GEMM and
kernel call releases it); inside a busy server each hand-off waits for the RPC threads, and a
batch ran 1.6-2x slower than the same batch alone (bench/README.md, #5). In a worker process the
twin has a GIL of its own: per batch the host pickles the input into a pipe, blocks without the
GIL, and unpickles the result, like a driver waiting for DONE.

Programs are uploaded once (``load``), run by id, and freed (``close``). If the worker dies,
calls raise DeviceError; ``reset`` starts a new worker and uploads the programs again.
"""

from __future__ import annotations

import itertools
import multiprocessing
import threading
from multiprocessing.connection import Connection
from typing import Any

from fpga_serve.core.errors import DeviceError, FpgaServeError
from fpga_serve.core.isa import Program


def _serve(conn: Connection, native: bool | None) -> None:  # pragma: no cover - child process
    """The worker's loop: (op, program id, payload) -> ("ok", value) | ("error", message)."""
    from fpga_serve.hw.twin.device import TwinDevice

    device: TwinDevice | None = None
    programs: dict[int, Any] = {}
    while True:
        try:
            op, pid, payload = conn.recv()
        except (EOFError, OSError):
            return
        try:
            if device is None:  # built here so that its refusal reaches the host as an error
                device = TwinDevice(native=native)
            if op == "native":
                result: Any = device.native
            elif op == "load":
                programs[pid] = device.load(payload)
                result = programs[pid].path
            elif op == "run":
                result = programs[pid].run(payload)
            elif op == "close":
                programs.pop(pid).close()
                result = None
            else:
                return
            conn.send(("ok", result))
        except FpgaServeError as exc:
            conn.send(("error", str(exc)))
        except Exception as exc:  # a bug in the twin: reported, the worker keeps serving
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


class TwinWorker:
    """The host's side of the pipe to one worker process (calls are serialised)."""

    def __init__(self, native: bool | None) -> None:
        self.native = native
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._start()

    def _start(self) -> None:
        ctx = multiprocessing.get_context("spawn")  # no fork of a threaded server
        self._conn, child = ctx.Pipe()
        self.process = ctx.Process(
            target=_serve, args=(child, self.native), name="fpga-serve-twin", daemon=True
        )
        self.process.start()
        child.close()

    def call(self, op: str, pid: int, payload: Any = None) -> Any:
        with self._lock:
            try:
                self._conn.send((op, pid, payload))
                status, value = self._conn.recv()
            except (EOFError, OSError, BrokenPipeError) as exc:
                code = self.process.exitcode
                raise DeviceError(f"the twin's worker process died (exit code {code})") from exc
        if status != "ok":
            raise DeviceError(f"twin worker: {value}")
        return value

    def new_id(self) -> int:
        return next(self._ids)

    def restart(self, programs: dict[int, Program]) -> None:
        self.stop()
        self._start()
        for pid, program in programs.items():
            self.call("load", pid, program)

    def stop(self) -> None:
        if self.process.is_alive():
            try:
                with self._lock:
                    self._conn.send(("exit", 0, None))
            except OSError:
                pass
            self.process.join(timeout=5)
            if self.process.is_alive():
                self.process.kill()
                self.process.join()
        self._conn.close()
