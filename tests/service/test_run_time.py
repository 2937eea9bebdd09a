"""What decides whether an event loop runs a model itself (service/run_time.py): a run on the
loop counts its wall time, one on a thread its CPU time (not the waits for the GIL a loop
would not have), and a second run on the loop that took the bound or longer within
STRIKE_WINDOW runs there keeps the model off the loop for a cooldown that doubles while such
runs repeat (a lone one is forgiven); a run on a thread far longer than the bound counts its
wall time."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

from fpga_serve.service.run_time import FIRST_COOLDOWN, STRIKE_WINDOW, WAIT_FACTOR, RunTime

BOUND = 0.02


def _sleep(seconds: float) -> Callable[[], None]:
    return lambda: time.sleep(seconds)


def _spin(seconds: float) -> Callable[[], None]:
    def spin() -> None:
        end = time.thread_time() + seconds
        while time.thread_time() < end:
            pass

    return spin


def _on_loop(rt: RunTime, run: Callable[[], None]) -> None:
    async def main() -> None:
        rt.timed(run)

    asyncio.run(main())


def _on_thread(rt: RunTime, run: Callable[[], None]) -> None:
    thread = threading.Thread(target=rt.timed, args=(run,))
    thread.start()
    thread.join()


def test_a_run_on_a_thread_counts_its_cpu_time_not_its_waits() -> None:
    rt = RunTime(BOUND)
    assert not rt.inline()  # never run: unknown
    _on_thread(rt, _sleep(0.1))  # a thread waiting (for the GIL, say) uses no CPU
    assert rt.seconds < BOUND / 2
    assert rt.inline()
    busy = RunTime(BOUND)
    _on_thread(busy, _spin(0.05))  # one that computes counts
    assert busy.seconds >= 0.05
    assert not busy.inline()


def test_a_run_on_a_thread_that_waits_far_longer_than_the_bound_counts_its_wall_time() -> None:
    rt = RunTime(BOUND)
    _on_thread(rt, _sleep(WAIT_FACTOR * BOUND))  # no GIL wait is that long: a device's is
    assert rt.seconds >= WAIT_FACTOR * BOUND
    assert not rt.inline()


def test_a_run_on_the_loop_counts_its_wall_time() -> None:
    rt = RunTime(BOUND)
    _on_loop(rt, _sleep(0.05))  # what the loop was held for
    assert rt.seconds >= 0.05
    assert not rt.inline()


def _off_runs(rt: RunTime) -> int:
    """Runs on a thread (short) until the model may hold the loop again."""
    runs = 0
    while not rt.inline() and runs < 1000:  # bounded: a model never let back fails, not hangs
        _on_thread(rt, _sleep(0))
        runs += 1
    return runs


def test_a_lone_long_run_on_the_loop_is_forgiven() -> None:
    rt = RunTime(BOUND)
    _on_thread(rt, _sleep(0))
    for _ in range(3):
        _on_loop(rt, _sleep(BOUND))  # the loop's thread descheduled once, say
        assert rt.inline()
        for _ in range(STRIKE_WINDOW):
            _on_loop(rt, _sleep(0))
        assert rt.inline()


def test_a_second_long_run_on_the_loop_keeps_the_model_off_it_for_a_doubling_cooldown() -> None:
    rt = RunTime(BOUND)
    _on_thread(rt, _sleep(0))
    _on_loop(rt, _sleep(BOUND))  # it waited: only the loop's wall time shows it
    for _ in range(STRIKE_WINDOW - 1):
        _on_loop(rt, _sleep(0))
    for cooldown in (FIRST_COOLDOWN, 2 * FIRST_COOLDOWN, 4 * FIRST_COOLDOWN):
        _on_loop(rt, _sleep(BOUND))  # the second within the window, then again at once
        assert _off_runs(rt) == cooldown  # short from a thread, as before
    _on_loop(rt, _sleep(0))  # short on the loop: the cooldown starts over
    _on_loop(rt, _sleep(BOUND))
    assert _off_runs(rt) == FIRST_COOLDOWN


def test_with_a_bound_of_zero_no_run_is_inline() -> None:
    rt = RunTime(0.0)
    _on_thread(rt, _sleep(0))
    assert not rt.inline()
