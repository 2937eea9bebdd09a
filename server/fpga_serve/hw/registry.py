"""Device selection: ``auto`` takes the highest-priority device whose probe succeeds."""

from __future__ import annotations

import logging
from typing import Any

from fpga_serve.core.errors import DeviceError
from fpga_serve.hw.base import Device

log = logging.getLogger(__name__)

_DEVICES: dict[str, type[Device]] = {}


def register_device(cls: type[Device]) -> type[Device]:
    _DEVICES[cls.name] = cls
    return cls


def _builtin() -> None:
    from fpga_serve.hw.twin.device import TwinDevice

    register_device(TwinDevice)
    import importlib.util

    if importlib.util.find_spec("fpga_serve.hw.pynq_device") is not None:
        module = importlib.import_module("fpga_serve.hw.pynq_device")
        register_device(module.PynqDevice)


def available() -> list[str]:
    _builtin()
    return sorted(_DEVICES, key=lambda n: -_DEVICES[n].priority)


def select_device(name: str = "auto", options: dict[str, Any] | None = None) -> Device:
    """A device by name, or for ``auto`` the best one present (the twin when no board is).
    ``options`` (the server's device settings, e.g. ``overlay``, ``pynq_simulate``) go to the
    device's ``probe`` and ``create``."""
    options = options or {}
    _builtin()
    if name == "auto":
        for cls in sorted(_DEVICES.values(), key=lambda c: -c.priority):
            if cls.probe(options):
                log.info("device auto-selected: %s", cls.name)
                return cls.create(options)
        raise DeviceError("no device available")
    if name not in _DEVICES:
        raise DeviceError(f"unknown device {name!r}; known: {', '.join(available())}")
    cls = _DEVICES[name]
    if not cls.probe(options):
        raise DeviceError(f"device {name!r} is not present on this machine")
    log.info("device selected: %s", name)
    return cls.create(options)
