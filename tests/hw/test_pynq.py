"""pynq's own MMIO and buffer code driving the simulated board: exact against the twin on every
op class and whole networks, register traffic per the spec, faults, and the server recovering."""

from __future__ import annotations

import dataclasses
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pynq
import pytest
from conftest import small_network
from fpga_serve.compiler import CompileOptions, compile_model
from fpga_serve.core import descriptors
from fpga_serve.core.errors import DeviceError
from fpga_serve.core.isa import REGISTERS, SPEC, SPEC_VERSION, quantize_input, version_word
from fpga_serve.hw.pynq_device import PynqDevice
from fpga_serve.hw.pynq_sim import SimulatedPynqDevice, simulate, write_simulation_bitstream
from fpga_serve.hw.registry import select_device
from fpga_serve.hw.twin.device import TwinDevice
from fpga_serve_client import PredictionClient, ServiceError
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pynq.buffer import PynqBuffer
from pynq_sim_faults import FAULT_FILE, SERVER, instrument, restore
from serving import run_server
from waiting import wait_until

RNG = np.random.default_rng(5)


@pytest.fixture(scope="module", autouse=True)
def simulated_board() -> Iterator[None]:
    """The simulated board, pynq's active device, instrumented for faults in this module."""
    instrument(simulate("zcu104"))
    yield
    restore()


ROOT = Path(__file__).resolve().parents[2]
HWH = ROOT / "bitstreams" / "boards" / "zcu104" / "fpga_cnn.hwh"


@pytest.fixture(scope="module")
def overlay(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The overlay as the simulated board takes it: a simulation image and the real .hwh."""
    folder = tmp_path_factory.mktemp("overlay")
    shutil.copy(HWH, folder / "fpga_cnn.hwh")
    return write_simulation_bitstream(folder / "fpga_cnn.bit")


@pytest.fixture(scope="module")
def device(simulated_board: None, overlay: Path) -> PynqDevice:
    return PynqDevice(overlay)


@pytest.fixture(scope="module")
def compiled() -> Any:
    model = small_network()
    return compile_model(
        model,
        RNG.normal(0, 1, (8, 16, 16, 3)).astype(np.float32),
        CompileOptions(calibration_method="max"),
    )


def test_pynq_loads_the_overlay_and_binds_the_driver_by_vlnv(
    device: PynqDevice, overlay: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The simulated board is pynq's active device: pynq's own allocate and MMIO, given no
    # device, reach its memory and registers.
    assert isinstance(device.pdev, SimulatedPynqDevice) and pynq.Device.active_device is device.pdev
    buf = pynq.allocate((64,), np.uint8)
    buf[:] = np.arange(64)
    assert isinstance(buf, PynqBuffer)
    assert np.array_equal(device.pdev.default_memory.view(buf.device_address, 64), np.arange(64))
    mmio = pynq.MMIO(device.mmio.base_addr, 0x100)
    assert mmio.read(REGISTERS["VERSION"]) == device.mmio.read(REGISTERS["VERSION"]) != 0
    # Only the setting switches it on: pynq does not find it by probing.
    for variable in ("XILINX_XRT", "PYNQ_REMOTE_DEVICES"):
        monkeypatch.delenv(variable, raising=False)
    assert not PynqDevice.probe({}) and PynqDevice.probe({"pynq_simulate": True})
    options = {"overlay": overlay, "pynq_simulate": True, "pynq_sim_board": "zcu104"}
    assert select_device("auto", options).name == "pynq"
    assert isinstance(device.overlay, pynq.Overlay)
    assert isinstance(device.ip, pynq.DefaultIP) and type(device.ip).__name__ == "CnnAccelerator"
    assert device.ip.mmio.base_addr == 0xA0000000
    assert device.overlay.ip_dict["cnn_accel_0"]["type"] == SPEC["ip"]["vlnv"]
    # pynq's own clock code programmed the PS' PL clock registers from the .hwh.
    assert 0xFF5E00C0 in device.pdev.ps_registers


def test_bad_overlays_are_refused_naming_the_file(simulated_board: None, tmp_path: Path) -> None:
    with pytest.raises(DeviceError, match=r"nothere\.bit does not exist"):
        PynqDevice(tmp_path / "nothere.bit")
    bit = write_simulation_bitstream(tmp_path / "fpga_cnn.bit")
    with pytest.raises(DeviceError, match=r"fpga_cnn\.hwh is missing"):
        PynqDevice(bit)
    (tmp_path / "fpga_cnn.hwh").write_text("<EDKSYSTEM><broken")
    with pytest.raises(DeviceError, match=r"cannot load overlay .*fpga_cnn\.hwh"):
        PynqDevice(bit)
    other_ip = HWH.read_text().replace(SPEC["ip"]["vlnv"], "acme.com:hls:resizer:1.0")
    (tmp_path / "fpga_cnn.hwh").write_text(other_ip)
    with pytest.raises(DeviceError, match=rf"has no {re.escape(SPEC['ip']['vlnv'])} IP"):
        PynqDevice(bit)
    shutil.copy(HWH, tmp_path / "fpga_cnn.hwh")
    (tmp_path / "fpga_cnn.bit").write_bytes(b"\x00\x09\x0f\xf0 a real board's bitstream")
    with pytest.raises(DeviceError, match="not a bitstream for this board"):
        PynqDevice(bit)


def test_whole_network_is_exact_against_the_twin(device: PynqDevice, compiled: Any) -> None:
    ops = {i.op.name for i in compiled.program.instrs}
    assert ops == {"CONV", "MAXPOOL", "SCALE_SHIFT", "AVGPOOL", "GLOBAL_AVGPOOL"}  # ADD fused
    assert any(i.residual is not None for i in compiled.program.instrs)
    x = quantize_input(RNG.normal(0, 1, (5, 16, 16, 3)), compiled.program.input_scale)
    loaded = device.load(compiled.program)
    assert isinstance(loaded.weights, PynqBuffer) and loaded.regions == []
    for batch in (5, 1, 3):  # grows, then reuses its buffers
        got = loaded.run(x[:batch])
        assert np.array_equal(got, TwinDevice().load(compiled.program).run(x[:batch]))
    assert all(isinstance(r, PynqBuffer) for r in loaded.regions)
    # the buffers the board holds are the packer's device image, bytes for bytes
    image = descriptors.pack(compiled.program)
    assert np.array_equal(np.asarray(loaded.descs)[: image.descriptors.size], image.descriptors)
    assert np.array_equal(np.asarray(loaded.weights)[: image.weights.size], image.weights)
    # scratch, input and output: each its own buffer of 5 images
    assert [r.size for r in loaded.regions] == [5 * n for n in image.region_bytes]


def test_each_op_class_alone_is_exact(device: PynqDevice) -> None:
    import keras

    layers = {
        "conv 3x3/2": keras.layers.Conv2D(8, 3, strides=2, padding="same"),
        "maxpool same": keras.layers.MaxPooling2D(3, strides=2, padding="same"),
        "avgpool": keras.layers.AveragePooling2D(2),
    }
    for name, layer in layers.items():
        inp = keras.Input((9, 9, 4) if "avg" not in name else (8, 8, 4))
        model = keras.Model(inp, layer(inp))
        shape = model.inputs[0].shape[1:]
        data = RNG.normal(0, 1, (4, *shape)).astype(np.float32)
        program = compile_model(model, data).program
        x = quantize_input(data, program.input_scale)
        assert np.array_equal(device.load(program).run(x), TwinDevice().load(program).run(x)), name


def test_register_traffic_follows_the_spec(device: PynqDevice, compiled: Any) -> None:
    sim = device.pdev.accelerator
    sim.writes.clear()
    loaded = device.load(compiled.program)
    x = quantize_input(RNG.normal(0, 1, (2, 16, 16, 3)), compiled.program.input_scale)
    loaded.run(x)
    offsets = [off for off, _ in sim.writes]
    expected = [
        "DESC_ADDR_LO",
        "DESC_ADDR_HI",
        "DESC_COUNT",
        "ACT_ADDR_LO",
        "ACT_ADDR_HI",
        "ACT_STRIDE",
        "IN_ADDR_LO",
        "IN_ADDR_HI",
        "IN_STRIDE",
        "OUT_ADDR_LO",
        "OUT_ADDR_HI",
        "OUT_STRIDE",
        "WGT_ADDR_LO",
        "WGT_ADDR_HI",
        "WGT_BYTES",
        "BATCH",
        "IRQ_STATUS",
        "IRQ_ENABLE",
        "CTRL",
    ]
    assert offsets == [REGISTERS[name] for name in expected]
    values = dict(sim.writes)
    assert values[REGISTERS["DESC_COUNT"]] == len(compiled.program.instrs)
    assert values[REGISTERS["BATCH"]] == 2 and values[REGISTERS["CTRL"]] == 1
    assert values[REGISTERS["DESC_ADDR_LO"]] == loaded.descs.device_address & 0xFFFFFFFF
    placement = compiled.program.placement
    assert values[REGISTERS["ACT_STRIDE"]] == placement.image_bytes
    assert values[REGISTERS["IN_STRIDE"]] == placement.input_bytes
    assert values[REGISTERS["OUT_STRIDE"]] == placement.output_bytes
    for name, buffer in zip(("ACT", "IN", "OUT"), loaded.regions, strict=True):
        assert values[REGISTERS[f"{name}_ADDR_LO"]] == buffer.device_address & 0xFFFFFFFF
    assert sim.read(REGISTERS["IRQ_STATUS"]) == 1  # DONE


def test_a_program_for_another_array_is_refused_naming_both(
    device: PynqDevice, compiled: Any
) -> None:
    # the same network, built for the PYNQ-Z2's 16 x 16 array: a program consistent in itself
    other = compile_model(
        small_network(),
        RNG.normal(0, 1, (8, 16, 16, 3)).astype(np.float32),
        CompileOptions(calibration_method="max", target="pynq_z2"),
    ).program
    with pytest.raises(
        DeviceError,
        match=r"built for pynq_z2 \(array 16x16.*; the bitstream \S+fpga_cnn\.bit reports array "
        r"32x64.* \(rebuild the model with --target zcu104\)",
    ):
        device.load(other)
    bare = dataclasses.replace(compiled.program, target=None)
    with pytest.raises(DeviceError, match="not planned"):
        device.load(bare)


def test_an_out_of_spec_descriptor_ends_the_run_naming_the_instruction(
    device: PynqDevice, compiled: Any
) -> None:
    loaded = device.load(compiled.program)
    x = quantize_input(RNG.normal(0, 1, (1, 16, 16, 3)), compiled.program.input_scale)
    want = loaded.run(x)
    table = np.asarray(loaded.descs).view(descriptors.DESCRIPTOR)
    saved = table[2].copy()
    table["band_rows"][2] = 60000  # a band that cannot fit the accumulator
    loaded.descs.flush()
    name = compiled.program.instrs[2].name
    with pytest.raises(
        DeviceError,
        match=rf"error 3 \(BAD_DESCRIPTOR\) at instruction 2 \(CONV {re.escape(name)}\)",
    ):
        loaded.run(x)
    device.reset()
    table[2] = saved
    loaded.descs.flush()
    assert np.array_equal(loaded.run(x), want)


def test_dma_error_and_hang_become_device_errors_then_reset_recovers(
    device: PynqDevice, compiled: Any
) -> None:
    loaded = device.load(compiled.program)
    x = quantize_input(RNG.normal(0, 1, (1, 16, 16, 3)), compiled.program.input_scale)
    want = TwinDevice().load(compiled.program).run(x)
    device.pdev.accelerator.fault = "error"
    with pytest.raises(DeviceError, match=r"error 2 \(BAD_ADDRESS\)"):
        loaded.run(x)
    assert not device.healthy
    with pytest.raises(DeviceError, match="not healthy"):
        loaded.run(x)
    device.reset()
    assert np.array_equal(loaded.run(x), want)

    device.pdev.accelerator.fault = "hang"
    device.timeout_s = 0.2
    start = time.monotonic()
    with pytest.raises(DeviceError, match=r"did not finish within 0\.2 s"):
        loaded.run(x)
    assert time.monotonic() - start < 2
    device.reset()
    device.timeout_s = 10.0
    assert np.array_equal(loaded.run(x), want)


def test_a_bad_opcode_is_error_code_1_as_the_spec_and_the_rtl_say(
    device: PynqDevice, compiled: Any
) -> None:
    loaded = device.load(compiled.program)
    x = quantize_input(RNG.normal(0, 1, (1, 16, 16, 3)), compiled.program.input_scale)
    want = loaded.run(x)
    loaded.descs[0] = 9  # the first descriptor's opcode byte: no such opcode  # type: ignore[attr-defined]
    loaded.descs.flush()  # type: ignore[attr-defined]
    with pytest.raises(DeviceError, match=r"error 1 \(BAD_OPCODE\) at instruction 0"):
        loaded.run(x)
    device.reset()
    loaded.descs[0] = int(compiled.program.instrs[0].op)  # type: ignore[attr-defined]
    loaded.descs.flush()  # type: ignore[attr-defined]
    assert np.array_equal(loaded.run(x), want)


def test_a_wrong_accelerator_version_is_refused(device: PynqDevice, tmp_path: Path) -> None:
    shutil.copy(HWH, tmp_path / "fpga_cnn.hwh")
    old = tmp_path / "fpga_cnn.bit"
    write_simulation_bitstream(old, spec_version="0.9")
    try:
        with pytest.raises(DeviceError, match="reports spec version 0x00000009"):
            PynqDevice(old)
    finally:
        device.pdev.accelerator.regs[REGISTERS["VERSION"] // 4] = version_word(SPEC_VERSION)


@pytest.fixture(scope="module")
def fpga_zip(compiled: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fpga_serve.pipeline import FpgaStage, ModelDefinition

    model_def = ModelDefinition(name="net")
    model_def.pipeline.append(FpgaStage(compiled))
    path = tmp_path_factory.mktemp("pynq") / "net.zip"
    model_def.save(path)
    return path


def test_server_on_the_board_faults_then_serves_again(
    fpga_zip: Path, overlay: Path, tmp_path: Path
) -> None:
    faults = tmp_path / "fault"
    x = RNG.normal(0, 1, (2, 16, 16, 3)).astype(np.float32)
    with (
        run_server([fpga_zip], "--device", "twin") as twin,
        PredictionClient(twin.address, input_name="images") as client,
    ):
        want = client.score_numpy(x)
    env = {"FPGA_SERVE_PYNQ_SIMULATE": "1", FAULT_FILE: str(faults)}
    with (
        run_server(
            [fpga_zip],
            "--device",
            "pynq",
            "--device-check-interval-s",
            "0.3",
            "--overlay",
            str(overlay),
            env=env,
            entry=SERVER,
        ) as server,
        grpc.insecure_channel(server.address) as ch,
        PredictionClient(server.address, input_name="images", retries=0) as client,
    ):
        np.testing.assert_array_equal(client.score_numpy(x), want)
        health = health_pb2_grpc.HealthStub(ch)
        faults.write_text("error")
        with pytest.raises(ServiceError) as err:
            client.score_numpy(x)
        assert err.value.code == grpc.StatusCode.UNAVAILABLE and "BAD_ADDRESS" in err.value.details
        statuses: list[int] = []

        def back() -> bool:
            statuses.append(health.Check(health_pb2.HealthCheckRequest(), timeout=5).status)
            serving = statuses[-1] == health_pb2.HealthCheckResponse.SERVING
            return serving and health_pb2.HealthCheckResponse.NOT_SERVING in statuses

        wait_until(back, timeout=20, what="health NOT_SERVING and back to SERVING")
        np.testing.assert_array_equal(client.score_numpy(x), want)
    assert "reset and verified" in "".join(server.log)


def test_validate_mode_counts_mismatches_against_the_twin(
    fpga_zip: Path, overlay: Path, tmp_path: Path
) -> None:
    import urllib.request

    faults = tmp_path / "fault"
    env = {"FPGA_SERVE_PYNQ_SIMULATE": "1", FAULT_FILE: str(faults)}
    x = RNG.normal(0, 1, (1, 16, 16, 3)).astype(np.float32)
    with (
        run_server(
            [fpga_zip],
            "--device",
            "pynq",
            "--device-validate",
            "--overlay",
            str(overlay),
            env=env,
            entry=SERVER,
        ) as server,
        PredictionClient(server.address, input_name="images", retries=0) as client,
    ):
        client.score_numpy(x)
        client.score_numpy(x)
        faults.write_text("corrupt")
        client.score_numpy(x)
        url = f"http://127.0.0.1:{server.metrics_port}/metrics"
        text = urllib.request.urlopen(url, timeout=10).read().decode()
    counts = {
        line.split("result=")[1].split('"')[1]: float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("fpga_serve_device_validations_total")
    }
    assert counts == {"match": 2.0, "mismatch": 1.0}
    warned = re.findall(
        r"validate: stage 'featurizer' on pynq differs from the twin in (\d+) of "
        r"(\d+) output values of a batch of 1 \(mismatch 1;",
        "".join(server.log),
    )
    assert len(warned) == 1 and 0 < int(warned[0][0]) <= int(warned[0][1])


def test_pynq_without_a_board_is_a_clear_error(fpga_zip: Path) -> None:
    from serving import run_server_expect_failure

    stderr = run_server_expect_failure([fpga_zip], "--device", "pynq", "--no-pynq-simulate")
    assert "device 'pynq' is not present" in stderr


def test_a_board_reached_through_pynqs_remote_device(
    fpga_zip: Path, overlay: Path, tmp_path: Path, compiled: Any
) -> None:
    """pynq's RemoteDevice (PYNQ_REMOTE_DEVICES) drives a board over gRPC: the same Overlay,
    MMIO and buffer path, here against a fake PYNQ.remote board on loopback."""
    from pynq.pl_server.global_state import clear_global_state
    from pynq_remote_fake import Board, loopback_address, serve

    # pynq keeps the last download's metadata on disk in its install (global_pl_state_.json
    # and _current_metadata.pkl), keyed by the .bit's hash, and RemoteDevice takes that cached
    # parser instead of reading the .hwh. A preset's simulation .bit always has the same bytes,
    # so a parser cached by an earlier process for another .hwh (an older tree's, say) would
    # be used: start without one.
    clear_global_state()
    board = Board()
    host = loopback_address()
    remote = serve(board, host)
    x = RNG.normal(0, 1, (3, 16, 16, 3)).astype(np.float32)
    try:
        with (
            run_server([fpga_zip], "--device", "twin") as twin,
            PredictionClient(twin.address, input_name="images") as client,
        ):
            want = client.score_numpy(x)
            want_one = client.score_numpy(x[:1])
        env = {"PYNQ_REMOTE_DEVICES": host, "FPGA_SERVE_PYNQ_SIMULATE": "0"}
        with (
            run_server(
                [fpga_zip], "--device", "pynq", "--overlay", str(overlay), env=env
            ) as server,
            PredictionClient(server.address, input_name="images") as client,
        ):
            got = client.score_numpy(x)
            one = client.score_numpy(x[:1])  # a smaller batch in the same buffers
            log = "".join(server.log)
        np.testing.assert_array_equal(one, want_one)
        np.testing.assert_array_equal(got, want)
        # PYNQ.remote has no interrupts: runs end on the fixed poll, said once at start (pynq's
        # RemoteInterrupt raises on every wait).
        assert "remote device delivers no interrupts: runs end on a 0.1 ms STATUS poll" in log
        assert "not yet implemented for remote devices" not in log.split("STATUS poll", 1)[1]
        assert board.downloads == ["fpga_cnn.bin"]  # pynq converted and sent the bitstream
        assert board.accelerator.runs >= 1
        assert 0xFF5E00C0 in board.ps_registers  # pynq's clock code, over the remote MMIO
        # Over the network go the weights and descriptors once, then per run the input images
        # alone; only the output buffer comes back; the activation scratch never crosses.
        image = descriptors.pack(compiled.program)
        (weights, _), (descs, _), *regions = board.allocations
        assert len(regions) % 3 == 0 and regions  # scratch, input, output per batch size
        scratch = {b for b, _ in regions[0::3]}
        inputs, outputs = dict(regions[1::3]), dict(regions[2::3])
        assert all(n % image.input_bytes == 0 for n in inputs.values())
        assert all(n % image.output_bytes == 0 for n in outputs.values())
        writes = [(b, n) for kind, b, n in board.transfers if kind == "write"]
        reads = [(b, n) for kind, b, n in board.transfers if kind == "read"]
        assert writes[:2] == [(weights, image.weights.size), (descs, image.descriptors.size)]
        # per run the batch's images (3, then 1 in a buffer of 3), whole output buffers back
        assert [(inputs.get(b), n) for b, n in writes[2:]][-2:] == [
            (3 * image.input_bytes, 3 * image.input_bytes),
            (3 * image.input_bytes, image.input_bytes),
        ]
        assert len(writes) - 2 == len(reads) and all(outputs.get(b) == n for b, n in reads)
        assert not scratch & {b for _, b, _ in board.transfers}
    finally:
        remote.stop(0)
