"""Waiting in tests: on a condition with a deadline, never for a fixed time.

``wait_until`` polls until the condition holds and fails after the deadline, so a slow, loaded
machine makes a test slower, not red. ``holds_for`` is for the opposite claim, that something
does *not* happen (no extra batch starts, nothing is dropped): it watches the condition for a
window. On correct code it passes however loaded the machine is; it can only miss a fault that
shows up later than the window, never report one that is not there.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    condition: Callable[[], T],
    timeout: float = 30.0,
    what: str | Callable[[], str] = "",
    interval: float = 0.002,
) -> T:
    """Poll ``condition`` until it returns something truthy and return that; after ``timeout``
    seconds raise AssertionError saying ``what`` was awaited (a callable is asked then, so it
    can tell the last value seen), or naming the condition."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            said = what() if callable(what) else what
            raise AssertionError(f"not within {timeout} s: {said or condition.__qualname__}")
        time.sleep(interval)


def holds_for(condition: Callable[[], object], seconds: float, interval: float = 0.002) -> bool:
    """True when ``condition`` stays truthy for ``seconds`` (False at its first lapse)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not condition():
            return False
        time.sleep(interval)
    return bool(condition())
