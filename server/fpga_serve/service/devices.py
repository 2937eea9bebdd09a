"""Which device FPGA stages run on: chosen once per server from the ``device`` setting."""

from __future__ import annotations

import threading
from collections.abc import Callable

from fpga_serve.hw.base import Device
from fpga_serve.hw.registry import select_device
from fpga_serve.modelzip import LoadContext


def load_context_factory(device: str) -> Callable[[], LoadContext]:
    """LoadContexts sharing one device, selected (and logged) the first time a stage needs
    one, so a server with only CPU stages never probes for a board."""
    chosen: list[Device] = []
    lock = threading.Lock()

    def get() -> Device:
        with lock:
            if not chosen:
                chosen.append(select_device(device))
            return chosen[0]

    def factory() -> LoadContext:
        return LoadContext(device=None, workdir=None, device_factory=get)

    return factory
