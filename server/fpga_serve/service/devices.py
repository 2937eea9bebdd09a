"""The server's one device: selected once from the ``device`` setting, shared by every FPGA
stage, and nursed back to health after faults."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from fpga_serve.core.errors import FpgaServeError
from fpga_serve.hw.base import Device
from fpga_serve.hw.registry import select_device
from fpga_serve.modelzip import LoadContext

log = logging.getLogger(__name__)


class DeviceHolder:
    """Selects the device the first time a stage needs one (CPU-only pipelines never probe
    for a board) and resets it after a fault."""

    def __init__(
        self,
        name: str,
        validate: Callable[[str, bool], None] | None = None,
        options: dict[str, Any] | None = None,
        busy: Callable[[str], Callable[[float], None]] | None = None,
        cycles: Callable[[str], Callable[[str, list[tuple[str, int]]], None]] | None = None,
    ) -> None:
        self.name = name
        self.validate = validate
        self.options = dict(options or {})
        self.busy = busy  # device name -> the hook told each run's seconds on the device
        self.cycles = cycles  # device name -> the hook told each run's instruction cycles
        self._device: Device | None = None
        self._lock = threading.Lock()

    @property
    def device(self) -> Device | None:
        return self._device

    def get(self) -> Device:
        with self._lock:
            if self._device is None:
                device = select_device(self.name, self.options)
                if self.busy is not None:
                    device.busy_hook = self.busy(device.name)
                if self.cycles is not None:
                    device.cycles_hook = self.cycles(device.name)
                self._device = device
            return self._device

    def context(self) -> LoadContext:
        return LoadContext(
            device=None, workdir=None, device_factory=self.get, validate=self.validate
        )

    def healthy(self) -> bool:
        """False while the device is failed; probes it (``Device.check``: a dead twin worker
        is noticed here, without a request)."""
        return self._device is None or self._device.check()

    def try_reset(self) -> bool:
        """Reset and re-verify a failed device; True when it is healthy again."""
        device = self._device
        if device is None or device.healthy:
            return True
        try:
            device.reset()
        except FpgaServeError as exc:
            log.error("device %s reset failed: %s", device.name, exc)
            return False
        log.warning("device %s was reset and verified; serving again", device.name)
        return device.healthy

    def close(self) -> None:
        """Release the device (the twin's worker process, a board's overlay) at shutdown."""
        with self._lock:
            device, self._device = self._device, None
        if device is not None:
            device.close()
