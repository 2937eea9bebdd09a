"""Devices that execute overlay programs. Validation lives here; backends implement primitives.

A device class declares ``name``, ``priority``, ``probe(options)`` and ``create(options)`` (the
server's device settings); ``registry.select_device`` picks one. ``load(program)`` uploads a
program once (weights into device memory) and returns a ``LoadedProgram`` whose ``run``
executes a batch. Faults raise ``DeviceError``, and this module
is the one place that turns one into a failed device: any ``DeviceError`` out of a backend's
``_run`` marks its device failed, and ``check`` (the server's supervisor calls it every
interval) marks a device failed that ``alive`` says is gone, with no request needed to notice.
The supervisor then resets it (``reset``) and reports SERVING again.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from fpga_serve.core.errors import DeviceError, InvalidInput
from fpga_serve.core.isa import SPEC_VERSION, Program, validate


class LoadedProgram(ABC):
    """A program resident on a device."""

    def __init__(self, device: Device, program: Program) -> None:
        self.device = device
        self.program = program

    def run(self, x: np.ndarray) -> np.ndarray:
        """int8 [N, H, W, C] in, int8 [N, h, w, c] out (the program's output slice)."""
        expected = self.program.input_shape()
        if x.dtype != np.int8 or x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise InvalidInput(
                f"device input must be int8 [N, {', '.join(map(str, expected))}], "
                f"got {x.dtype} {list(x.shape)}"
            )
        if not self.device.healthy:
            raise DeviceError(f"device {self.device.name} is not healthy (reset pending)")
        x = np.ascontiguousarray(x)
        with self.device.lock:  # one owner: programs never interleave on the device
            start = time.perf_counter()
            try:
                return self._run(x)
            except DeviceError:
                self.device.mark_failed()  # for every backend, here: the supervisor resets it
                raise
            finally:
                hook = self.device.busy_hook
                if hook is not None:  # the time it held the device, not the time it waited
                    hook(time.perf_counter() - start)

    @abstractmethod
    def _run(self, x: np.ndarray) -> np.ndarray: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        """Free device memory held by the program."""


class Device(ABC):
    name: ClassVar[str]
    priority: ClassVar[int] = 0

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._healthy = True
        self.busy_hook: Callable[[float], None] | None = None
        """Told the seconds of every run, measured while the run holds the device (metrics)."""
        self.cycles_hook: Callable[[str, list[tuple[str, int]]], None] | None = None
        """Told, after each run of a device that counts cycles, the program's id and each
        instruction's cycles ("index name", cycles) from the device's own counters (metrics)."""

    @classmethod
    def create(cls, options: dict[str, Any]) -> Device:
        """Construct from server options (each device takes the ones it knows)."""
        return cls()

    @classmethod
    def probe(cls, options: dict[str, Any]) -> bool:
        """True when this device can be used on this machine (with these server options)."""
        return True

    @property
    def healthy(self) -> bool:
        return self._healthy

    def mark_failed(self) -> None:
        self._healthy = False

    def alive(self) -> bool:
        """A cheap liveness probe (a worker process still running, a board still answering);
        backends that can tell override it."""
        return True

    def check(self) -> bool:
        """The supervisor's probe: marks the device failed when ``alive`` says it is gone;
        True when the device is healthy."""
        if self._healthy and not self.alive():
            self.mark_failed()
        return self._healthy

    def load(self, program: Program) -> LoadedProgram:
        if program.spec_version != SPEC_VERSION:
            raise DeviceError(
                f"program for overlay spec {program.spec_version}, device runs {SPEC_VERSION}"
            )
        validate(program)
        return self._load(program)

    @abstractmethod
    def _load(self, program: Program) -> LoadedProgram: ...

    def reset(self) -> None:
        """Bring the device back to a known state and mark it healthy."""
        self._healthy = True

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the device."""
