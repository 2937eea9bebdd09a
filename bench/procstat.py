"""CPU accounting from /proc for the benches: per process (user + system, all threads), per
process family (a pid and its descendants), and the whole machine (/proc/stat), so a window's
numbers can say how much CPU the server, the client and everything else on the machine used."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Snapshot:
    at: float
    """time.perf_counter() when taken."""
    procs: dict[int, tuple[int, float, str]]
    """pid -> (parent pid, CPU seconds so far, command name)."""
    busy: float
    """CPU seconds the machine spent busy (user, nice, system, irq, softirq), all CPUs."""
    steal: float
    """CPU seconds the hypervisor gave to other guests (a VM's noise that no process shows)."""
    load: float
    """The 1-minute load average."""


def snapshot() -> Snapshot:
    """Every process's CPU so far (scans /proc/*/stat; /proc/<pid>/task/*/children needs a
    kernel option), and the machine's busy and steal time."""
    procs: dict[int, tuple[int, float, str]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # exited while scanning
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        fields = text[text.rindex(")") + 2 :].split()  # the name may hold spaces and ")"
        # field 4, ppid; fields 14-15, utime and stime (1-based, as in proc(5))
        cpu = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
        procs[int(stat.parent.name)] = (int(fields[1]), cpu, name)
    with open("/proc/stat") as fh:
        ticks = [int(v) for v in fh.readline().split()[1:]]
    busy = (ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6]) / CLOCK_TICKS
    steal = (ticks[7] if len(ticks) > 7 else 0) / CLOCK_TICKS
    load = float(Path("/proc/loadavg").read_text().split()[0])
    return Snapshot(time.perf_counter(), procs, busy, steal, load)


def family(snap: Snapshot, pid: int) -> set[int]:
    """``pid`` and all its descendants in ``snap``."""
    members = {pid}
    frontier = [pid]
    while frontier:
        frontier = [c for c, (parent, _, _) in snap.procs.items() if parent in frontier]
        frontier = [c for c in frontier if c not in members]
        members.update(frontier)
    return members


def cpu_between(before: Snapshot, after: Snapshot, pids: set[int]) -> float:
    """CPU seconds ``pids`` used between the snapshots; one born since counts whole, one that
    died since is lost (the machine's total, ``busy``, still has it)."""
    total = 0.0
    for pid in pids:
        if pid in after.procs:
            old = before.procs.get(pid)
            total += after.procs[pid][1] - (old[1] if old is not None else 0.0)
    return total


def by_name(before: Snapshot, after: Snapshot, skip: set[int]) -> dict[str, float]:
    """CPU seconds used between the snapshots by every process not in ``skip``, by name."""
    names: dict[str, float] = {}
    for pid, (_, cpu, name) in after.procs.items():
        if pid in skip:
            continue
        old = before.procs.get(pid)
        used = cpu - (old[1] if old is not None else 0.0)
        if used > 0:
            names[name] = names.get(name, 0.0) + used
    return names
