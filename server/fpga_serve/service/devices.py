"""Which device FPGA stages run on: chosen once per server from the ``device`` setting."""

from __future__ import annotations

from collections.abc import Callable

from fpga_serve.modelzip import LoadContext


def load_context_factory(device: str) -> Callable[[], LoadContext]:
    """A factory of LoadContexts sharing one device (selected lazily, on first use)."""
    chosen: list[object] = []

    def factory() -> LoadContext:
        return LoadContext(device=chosen[0] if chosen else None, workdir=None)

    return factory
