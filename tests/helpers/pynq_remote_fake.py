"""A fake PYNQ board reached through pynq's own remote protocol (gRPC, pynq/remote/*.proto):
the files, MMIO and buffer services a PYNQ.remote board serves, backed by the simulated
accelerator. With PYNQ_REMOTE_DEVICES=127.0.0.1, pynq's ``RemoteDevice`` drives it exactly as
it would drive a board across the network (on loopback here). pynq fixes the port: 7967."""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import numpy as np
from fpga_serve.hw.pynq_sim import (
    ACCEL_BASE,
    ACCEL_RANGE,
    DDR_BASE,
    SimMemory,
    SimulatedAccelerator,
    simulation_spec_version,
)
from pynq.remote import (
    buffer_pb2,
    buffer_pb2_grpc,
    mmio_pb2,
    mmio_pb2_grpc,
    remote_device_pb2,
    remote_device_pb2_grpc,
)

PORT = 7967
FPGA_MANAGER = "/sys/class/fpga_manager/fpga0/firmware"
CHUNK = 1 << 20


class Board:
    """The board's memory, files and accelerator."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.memory = SimMemory(None)  # type: ignore[arg-type]  # the simulated board's DDR model
        self.blocks: dict[str, tuple[int, np.ndarray]] = {}
        self.next_address = DDR_BASE
        self.ids = itertools.count(1)
        self.ps_registers: dict[int, int] = {0xFF5E0020: (90 << 8) | (1 << 16)}
        self.files: dict[str, bytes] = {
            "/proc/version": b"Linux version 6.6.10-xilinx (aarch64) #1 SMP",
            "/proc/device-tree/chosen/pynq_board": b"fpga-serve-fake\x00",
            "/sys/class/fpga_manager/fpga0/state": b"operating",
            "/sys/class/fpga_manager/fpga0/flags": b"0",
        }
        self.accelerator = SimulatedAccelerator(self.memory)
        self.accelerator.load_image("0.0")  # nothing loaded until a download
        self.downloads: list[str] = []
        self.allocations: list[tuple[str, int]] = []  # (buffer id, bytes) in order
        self.transfers: list[tuple[str, str, int]] = []  # ("write" / "read", buffer id, bytes)

    def write_file(self, path: str, data: bytes) -> None:
        self.files[path] = data
        if path == FPGA_MANAGER:  # the fpga_manager programs the named firmware
            name = data.decode().strip()
            image = self.files.get("/lib/firmware/" + name, b"")
            version = simulation_spec_version(image, from_bin=True)
            self.downloads.append(name)
            self.accelerator.load_image(version or "0.0")


class Device(remote_device_pb2_grpc.RemoteDeviceServicer):
    def __init__(self, board: Board) -> None:
        self.board = board

    def existsfile(self, request: Any, context: Any) -> Any:
        return remote_device_pb2.ExistsFileResponse(exists=request.file_path in self.board.files)

    def readfile(self, request: Any, context: Any) -> Iterator[Any]:
        data = self.board.files.get(request.file_path, b"")
        for i in range(0, max(len(data), 1), CHUNK):
            yield remote_device_pb2.ReadFileResponse(data=data[i : i + CHUNK])

    def writefile(self, request_iterator: Any, context: Any) -> Any:
        path, parts = "", []
        for request in request_iterator:
            path = request.file_path
            parts.append(request.data)
        self.board.write_file(path, b"".join(parts))
        return remote_device_pb2.WriteFileResponse()

    def set_bitstream_attrs(self, request: Any, context: Any) -> Any:
        return remote_device_pb2.SetBitstreamAttrsResponse(status=True)

    def set_pl_clk(self, request: Any, context: Any) -> Any:
        return remote_device_pb2.SetPlClkResponse(status=True)

    def shutdown(self, request: Any, context: Any) -> Any:
        return remote_device_pb2.ShutdownResponse(status=True)


class Mmio(mmio_pb2_grpc.MmioServicer):
    def __init__(self, board: Board) -> None:
        self.board = board
        self.maps: dict[str, int] = {}

    def get_mmio(self, request: Any, context: Any) -> Any:
        mmio_id = str(len(self.maps) + 1)
        self.maps[mmio_id] = request.base_addr
        return mmio_pb2.GetMmioResponse(status=True, mmio_id=mmio_id)

    def read(self, request: Any, context: Any) -> Any:
        address = self.maps[request.mmio_id] + request.offset
        with self.board.lock:
            if ACCEL_BASE <= address < ACCEL_BASE + ACCEL_RANGE:
                value = self.board.accelerator.read(address - ACCEL_BASE)
            else:
                value = self.board.ps_registers.get(address, 0)
        return mmio_pb2.ReadResponse(status=True, data=value & 0xFFFFFFFF)

    def write(self, request: Any, context: Any) -> Any:
        address = self.maps[request.mmio_id] + request.offset
        words = np.frombuffer(request.data, "<u4")
        with self.board.lock:
            for i, word in enumerate(words):
                at = address + 4 * i
                if ACCEL_BASE <= at < ACCEL_BASE + ACCEL_RANGE:
                    self.board.accelerator.write(at - ACCEL_BASE, int(word))
                else:
                    self.board.ps_registers[at] = int(word)
        return mmio_pb2.WriteResponse(status=True)


class Buffers(buffer_pb2_grpc.RemoteBufferServicer):
    def __init__(self, board: Board) -> None:
        self.board = board

    def allocate(self, request: Any, context: Any) -> Any:
        board = self.board
        with board.lock:
            buffer_id = str(next(board.ids))
            size = (request.size + 63) // 64 * 64 or 64
            block = (board.next_address, np.zeros(size, np.uint8))
            board.blocks[buffer_id] = block
            board.allocations.append((buffer_id, request.size))
            board.memory.blocks.append(block)
            board.next_address += size + 4096
        return buffer_pb2.AllocateResponse(buffer_id=buffer_id)

    def write(self, request_iterator: Any, context: Any) -> Any:
        offset, buffer_id = 0, ""
        for request in request_iterator:
            buffer_id = request.buffer_id
            _, backing = self.board.blocks[request.buffer_id]
            data = np.frombuffer(request.data, np.uint8)
            backing[offset : offset + data.size] = data
            offset += data.size
        self.board.transfers.append(("write", buffer_id, offset))
        return buffer_pb2.BufferWriteResponse()

    def read(self, request: Any, context: Any) -> Iterator[Any]:
        _, backing = self.board.blocks[request.buffer_id]
        data = backing.tobytes()
        self.board.transfers.append(("read", request.buffer_id, len(data)))
        for i in range(0, len(data), CHUNK):
            yield buffer_pb2.BufferReadResponse(data=data[i : i + CHUNK])

    def freebuffer(self, request: Any, context: Any) -> Any:
        block = self.board.blocks.pop(request.buffer_id, None)
        if block is not None:
            self.board.memory.blocks = [b for b in self.board.memory.blocks if b is not block]
        return buffer_pb2.FreeBufferResponse()

    def flush(self, request: Any, context: Any) -> Any:
        return buffer_pb2.FlushResponse()

    def invalidate(self, request: Any, context: Any) -> Any:
        return buffer_pb2.InvalidateResponse()

    def physical_address(self, request: Any, context: Any) -> Any:
        return buffer_pb2.AddressResponse(address=self.board.blocks[request.buffer_id][0])

    def virtual_address(self, request: Any, context: Any) -> Any:
        return buffer_pb2.AddressResponse(address=self.board.blocks[request.buffer_id][0])

    def cacheable(self, request: Any, context: Any) -> Any:
        return buffer_pb2.CacheableResponse(cacheable=True)


def loopback_address() -> str:
    """A loopback address of this process's own: pynq's remote device always dials port 7967, and
    a test of another worktree may serve its fake board there at the same time."""
    pid = os.getpid()
    return f"127.{(pid >> 16) & 255}.{(pid >> 8) & 255}.{(pid & 255) or 1}"


def serve(board: Board, host: str = "127.0.0.1", port: int = PORT) -> grpc.Server:
    server = grpc.server(
        futures.ThreadPoolExecutor(8),
        options=[
            ("grpc.max_receive_message_length", 64 << 20),
            ("grpc.max_send_message_length", 64 << 20),
            ("grpc.so_reuseport", 0),  # a second fake board on the same address fails to bind
        ],
    )
    remote_device_pb2_grpc.add_RemoteDeviceServicer_to_server(Device(board), server)
    mmio_pb2_grpc.add_MmioServicer_to_server(Mmio(board), server)
    buffer_pb2_grpc.add_RemoteBufferServicer_to_server(Buffers(board), server)
    if server.add_insecure_port(f"{host}:{port}") == 0:
        raise RuntimeError(f"cannot bind {host}:{port}")
    server.start()
    return server
