"""Memory that the host and the twin's worker process both map, for a run's input and output.

Pickled through the worker's pipe, a ResNet-50 224 image (150 KB in, 100 KB out) took ~0.37 ms
longer per call than a message of a few bytes, after the pauses between requests that a server
has (bench/README.md): the socket's buffer passes it in pieces, each piece wakes a side, and
every unpickled array is fresh memory the kernel faults in page by page. A segment is made
once, as an anonymous memory file (``os.memfd_create``: no name in any file system, so nothing
can leak past the two processes), handed to the worker as a file descriptor over the same
pipe, and reused run after run: the host copies the input in, the worker reads it in place and
writes the output after it, and the pipe carries only shapes.

Its space is taken up front (``posix_fallocate``), so a memory limit fails the segment's
creation with an error (the host then pickles) rather than a later write with SIGBUS.
"""

from __future__ import annotations

import contextlib
import math
import mmap
import os

import numpy as np

ALIGN = 64
"""Where the output starts: the input's bytes rounded up to a cache line."""
GRAIN = 1 << 20
"""A segment's size is a multiple of this (so that a batch a little larger than the last one
fits without a new segment)."""
MAX_BYTES = 1 << 30
"""The largest segment made; a run that needs more is pickled through the pipe."""


def available() -> bool:
    """Whether this platform has anonymous memory files (Linux)."""
    return hasattr(os, "memfd_create")


def aligned(nbytes: int) -> int:
    return -(-nbytes // ALIGN) * ALIGN


def needed(x: np.ndarray, out_shape: tuple[int, ...]) -> int:
    """Bytes of a segment holding ``x`` and the int8 output of shape [N, *out_shape]."""
    return aligned(x.nbytes) + x.shape[0] * math.prod(out_shape)


class Segment:
    """One mapping of a memory file; ``fd=None`` makes a new file of ``size`` bytes."""

    def __init__(self, size: int, fd: int | None = None) -> None:
        if fd is None:
            fd = os.memfd_create("fpga-serve-twin", os.MFD_CLOEXEC)
            try:
                os.posix_fallocate(fd, 0, size)
            except OSError:
                os.close(fd)
                raise
        self.fd = fd
        self.size = size
        try:
            self._map = mmap.mmap(fd, size)
        except (OSError, ValueError):
            os.close(fd)
            raise

    @classmethod
    def sized(cls, nbytes: int) -> Segment:
        """A new segment of at least ``nbytes`` (rounded up to GRAIN)."""
        return cls(-(-nbytes // GRAIN) * GRAIN)

    def array(self, offset: int, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """A view of the segment's bytes from ``offset`` as an array (valid while it is open)."""
        count = math.prod(shape)
        if offset < 0 or offset + count * dtype.itemsize > self.size:
            raise ValueError(f"{count} x {dtype} at {offset} is outside a {self.size}-byte segment")
        return np.frombuffer(self._map, dtype, count, offset).reshape(shape)

    def close(self) -> None:
        with contextlib.suppress(BufferError):  # a view still alive: it goes with the last one
            self._map.close()
        os.close(self.fd)
