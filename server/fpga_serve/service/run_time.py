"""How long a model's runs would hold an event loop: what decides whether the loop that received
a request runs it itself (adapters/calls.py, Runner) or hands it to a thread."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

WAIT_FACTOR = 10
"""A run on a thread whose wall time is this many times the bound or more counts its wall
time: no wait for the GIL is that long (an interpreter holding it is made to let go every
5 ms), a wait on a device or on other threads is."""
FIRST_COOLDOWN = 16
"""Runs a model stays off the loop after a second run on the loop took the bound or longer
(doubled each time that happens again before a run on the loop is short)."""
STRIKE_WINDOW = 16
"""A run on the loop that took the bound or longer is forgiven (the model stays on the loop)
unless another one did within this many runs on the loop before it: a lone long run is the
machine's (the loop's thread descheduled, a collection, another thread holding the GIL), a
model that waits on every run is caught at its second."""


class RunTime:
    """A model's recent run time, smoothed over about eight runs (an exponential average;
    infinite before the first run), and whether its next run may hold an event loop.

    A run on an event loop's thread counts its wall time: what the loop was held for. A run on
    any other thread (an RPC thread, a batching worker) counts that thread's CPU time: its wall
    time also holds the waits for the GIL, held by the loop meanwhile, that running on the loop
    would not have, so a short model measured there would look long and stay off the loop.

    CPU time misses what a run waits for (a device, other threads doing its work): a run on a
    thread that took ``WAIT_FACTOR`` times the bound or longer counts its wall time, and a
    run on the loop that took ``bound`` or longer, when another did within the last
    ``STRIKE_WINDOW`` runs on the loop, also keeps the model off the loop for the next
    ``FIRST_COOLDOWN`` runs, twice as many each time it happens again, until a run on the loop
    is short again: a model that only looks short from a thread holds the loop ever more rarely,
    and one hit once by a pause (the loop's thread descheduled, a collection) stays on it.

    Updated by whichever thread ran, without a lock: a lost update only shifts one decision.
    """

    __slots__ = ("_cooldown", "_off", "_since_long", "bound", "seconds")

    def __init__(self, bound: float = 0.0) -> None:
        self.bound = bound
        """Runs shorter than this may hold the loop (seconds); 0: none may."""
        self.seconds = math.inf
        self._cooldown = FIRST_COOLDOWN
        self._off = 0  # runs still to go off the loop
        self._since_long = STRIKE_WINDOW  # short runs on the loop since its last long one

    def inline(self) -> bool:
        """Whether the next run may hold the loop that received it."""
        return self._off == 0 and self.seconds < self.bound

    def timed(self, run: Callable[[], T]) -> T:
        on_loop = asyncio._get_running_loop() is not None
        cpu = 0.0 if on_loop else time.thread_time()
        start = time.perf_counter()
        try:
            return run()
        finally:
            took = time.perf_counter() - start
            if not on_loop and took < WAIT_FACTOR * self.bound:
                took = time.thread_time() - cpu
            seconds = self.seconds
            self.seconds = took if seconds == math.inf else seconds + (took - seconds) / 8
            if not on_loop:
                self._off = max(0, self._off - 1)
            elif took >= self.bound:
                if self._since_long < STRIKE_WINDOW:
                    self._off = self._cooldown
                    self._cooldown *= 2
                self._since_long = 0
            else:
                self._since_long += 1
                self._cooldown = FIRST_COOLDOWN
