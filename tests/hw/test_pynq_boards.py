"""The PYNQ driver on the simulated board of each board of bitstreams/boards/boards.json: it binds
the accelerator from the committed .hwh with pynq's own Overlay (interrupt controller, PL clock
set by pynq's clock code on the board's PS, HP port widths set by pynq's download code), runs
exact against the twin completing on the interrupt, syncs only the input and output tensors, and
refuses at load every mismatched overlay naming the file and what it expected."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pynq
import pytest
from fpga_serve.compiler import CompileOptions, compile_model
from fpga_serve.core.boards import ACCELERATOR, BOARDS, INTC
from fpga_serve.core.errors import DeviceError
from fpga_serve.core.isa import SPACES, SPEC_VERSION, quantize_input
from fpga_serve.hw.pynq_device import PynqDevice
from fpga_serve.hw.pynq_sim import simulate, write_simulation_bitstream
from fpga_serve.hw.twin.device import TwinDevice
from pynq_sim_faults import instrument, restore

ROOT = Path(__file__).resolve().parents[2]
RNG = np.random.default_rng(12)
ACC = ACCELERATOR["instance"]


@pytest.fixture(scope="module")
def sim() -> Iterator[Any]:
    """The simulated board (one per process, pynq's active device), left as zcu104."""
    board = simulate("zcu104")
    instrument(board)  # latency and PERF values below
    yield board
    restore()
    board.use_board("zcu104")


def overlay(tmp: Path, name: str, preset: str | None = None, edit: Any = None) -> Path:
    """Board ``name``'s committed .hwh (edited by ``edit``) beside a simulation image of
    ``preset`` (default: the board's own)."""
    tmp.mkdir(parents=True, exist_ok=True)
    text = (ROOT / "bitstreams" / "boards" / name / "fpga_cnn.hwh").read_text()
    (tmp / "fpga_cnn.hwh").write_text(edit(text) if edit else text)
    return write_simulation_bitstream(
        tmp / "fpga_cnn.bit", preset_name=preset or BOARDS[name].preset.name
    )


def network() -> Any:
    import keras

    keras.utils.set_random_seed(3)
    inp = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inp)
    y = keras.layers.Conv2D(16, 3, padding="same")(x)
    x = keras.layers.ReLU()(keras.layers.Add()([x, y]))
    x = keras.layers.MaxPooling2D(2)(x)
    return keras.Model(inp, keras.layers.GlobalAveragePooling2D()(x))


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_the_driver_binds_every_boards_hwh_on_its_simulated_board(
    sim: Any, tmp_path: Path, name: str
) -> None:
    b = BOARDS[name]
    sim.use_board(name)
    device = PynqDevice(overlay(tmp_path, name))
    assert type(device.ip).__name__ == "CnnAccelerator" and device.mmio.base_addr == b.control_base
    assert device.overlay.ip_dict[INTC["instance"]]["phys_addr"] == b.intc_base
    assert isinstance(device.interrupt, pynq.Interrupt)
    assert device.hwh_preset is b.preset and device.features["array_co"] == b.preset.array_co
    # pynq's clock code set PL clock 0 on this PS (ZynqMP CRL_APB or Zynq-7000 SLCR) to the rate
    # the design needs, from the PLL the board boots with.
    assert abs(sim.ps.pl0_mhz() - b.ps_clock_mhz) <= b.ps_clock_mhz * 0.001
    assert abs(pynq.ps.Clocks.fclk0_mhz - b.ps_clock_mhz) <= b.ps_clock_mhz * 0.001


@pytest.mark.parametrize("name", ["zcu104", "pynq_z2"])
def test_runs_are_exact_end_on_the_interrupt_and_sync_only_their_tensors(
    sim: Any, tmp_path: Path, name: str
) -> None:
    b = BOARDS[name]
    sim.use_board(name)
    device = PynqDevice(overlay(tmp_path, name))
    data = RNG.normal(0, 1, (6, 12, 12, 3)).astype(np.float32)
    program = compile_model(
        network(), data, CompileOptions(calibration_method="max", target=b.preset.name)
    ).program
    x = quantize_input(data, program.input_scale)
    loaded = device.load(program)
    # Runs end 0.25 s after START, as on a board (long enough that even on a loaded machine the
    # driver reads STATUS before DONE and so waits on the interrupt: at 20 ms it did not once)
    sim.accelerator.latency_s = 0.25
    for batch in (3, 2):
        fired = sim.uio.fired
        sim.synced.clear()
        got = loaded.run(x[:batch])
        assert np.array_equal(got, TwinDevice().load(program).run(x[:batch]))
        assert sim.uio.fired > fired, "the run did not end on the interrupt"
        # Per run only the input buffer is flushed (this batch's images) and only the output
        # buffer invalidated; the scratch is flushed once, when it is allocated (batch 3).
        image = loaded.image
        scratch, inputs, outputs = (r.bo for r in loaded.regions)
        assert len({scratch, inputs, outputs}) == 3
        allocated = [("flush", scratch, 0, 3 * image.image_bytes)] if batch == 3 else []
        assert list(sim.synced) == [
            *allocated,
            ("flush", inputs, 0, batch * image.input_bytes),
            ("invalidate", outputs, 0, batch * image.output_bytes),
        ]
        h, w, c = image.input_shape
        assert image.input_at == (0, c, 0) and image.input_bytes == -(-h * w * c // 64) * 64
    # Without interrupt delivery the driver polls, and stays exact.
    device.interrupt = None
    assert np.array_equal(loaded.run(x[:1]), TwinDevice().load(program).run(x[:1]))


def test_a_network_whose_output_buffer_holds_its_input_runs_in_the_output_region(
    sim: Any, tmp_path: Path
) -> None:
    """Concatenate(input, conv(input)) as the output: one buffer is both, so it lives in the
    output region (the input region is left its minimum); the host writes and flushes the input
    there and invalidates it after the run."""
    import keras

    sim.use_board("zcu104")
    device = PynqDevice(overlay(tmp_path, "zcu104"))
    inp = keras.Input((8, 8, 3))
    conv = keras.layers.Conv2D(5, 3, padding="same", activation="relu")(inp)
    model = keras.Model(inp, keras.layers.Concatenate()([inp, conv]))
    data = RNG.normal(0, 1, (2, 8, 8, 3)).astype(np.float32)
    program = compile_model(model, data, CompileOptions(calibration_method="max")).program
    assert program.input.buffer == program.output.buffer
    loaded = device.load(program)
    image = loaded.image
    assert image.input_space == image.output_space == SPACES["OUT"]
    assert (image.input_bytes, image.output_bytes) == (64, 8 * 8 * 8)
    x = quantize_input(data, program.input_scale)
    sim.synced.clear()
    assert np.array_equal(loaded.run(x), TwinDevice().load(program).run(x))
    scratch, _, outputs = (r.bo for r in loaded.regions)
    assert list(sim.synced) == [
        ("flush", scratch, 0, 2 * image.image_bytes),
        ("flush", outputs, 0, 2 * image.output_bytes),
        ("invalidate", outputs, 0, 2 * image.output_bytes),
    ]


def _param(name: str, value: str) -> Any:
    return lambda text: re.sub(rf'(NAME="{name}" VALUE=")[^"]*"', rf'\g<1>{value}"', text)


def test_mismatched_overlays_are_refused_at_load_naming_the_file(sim: Any, tmp_path: Path) -> None:
    def refused(board: str, message: str, name: str | None = None, **kw: Any) -> None:
        sim.use_board(board)
        with pytest.raises(DeviceError, match=message):
            PynqDevice(overlay(tmp_path / str(len(list(tmp_path.iterdir()))), name or board, **kw))

    # An .hwh from another board, or of another spec version.
    other = r"is a build for preset kv260; this board is a Xilinx ZCU104 \(preset zcu104\)"
    refused(
        "zcu104",
        rf"fpga_cnn\.hwh {other}: use bitstreams/boards/zcu104/fpga_cnn\.bit",
        name="kv260",
    )
    refused(
        "zcu104",
        rf"fpga_cnn\.hwh is a build of fpga_cnn spec 2\.0; this server runs spec "
        rf"{re.escape(SPEC_VERSION)}",
        edit=_param("SPEC_VERSION", "2.0"),
    )
    refused("zcu104", r"has no SPEC_VERSION and PRESET parameters", edit=_param("PRESET", "(none)"))
    # A .bit whose FEATURES are another preset's than its .hwh's.
    features = r"the bitstream reports FEATURES .*'array_co': \(32, 64\).* describes preset zcu104"
    refused(
        "zcu104",
        rf"{features}: the \.bit and the \.hwh are not from the same build",
        preset="kv260",
    )

    # The .hwh wires the interrupt pin, but the board has no UIO device on the PS interrupt
    # line to deliver it (a device tree without PYNQ's `fabric` node).
    with pytest.MonkeyPatch.context() as mp:
        from pynq.interrupt import _InterruptController

        mp.setattr("pynq.interrupt.get_uio_irq", lambda irq: None)
        sim.use_board("ultra96v2")
        irq = BOARDS["ultra96v2"].ps.raw_irq
        del _InterruptController._uio_devices[irq]
        with (
            pytest.warns(UserWarning, match="Interrupt interrupt not created"),
            pytest.raises(
                DeviceError,
                match=r"fpga_cnn\.hwh wires cnn_accel_0/interrupt through axi_intc_0 to the PS "
                r"interrupt line, but this board cannot deliver it \(Could not find UIO device "
                rf"for interrupt pin for IRQ number {irq}\)",
            ),
        ):
            PynqDevice(overlay(tmp_path / "no-uio", "ultra96v2"))
    # A PL clock the board cannot make: KV260's IOPLL (1000 MHz) asked for 300 MHz straight.
    at_300 = lambda t: _param("PSU__CRL_APB__PL0_REF_CTRL__DIVISOR0", "5")(  # noqa: E731
        _param("PSU__CRL_APB__PL0_REF_CTRL__ACT_FREQMHZ", "300.000000")(t)
    )
    with pytest.warns(UserWarning, match="closest possible value 333"):
        refused(
            "kv260",
            r"fpga_cnn\.hwh needs PL clock 0 at 300\.0 MHz; the PS runs it at 333\.33\d MHz",
            edit=at_300,
        )
    # An HP port the .hwh sizes for other masters: the simulated PS refuses the download.
    refused(
        "zcu104",
        r"cannot load overlay .* S_AXI_HP0_FPD is 64-bit, the masters 128-bit",
        edit=_param("C_SAXIGP2_DATA_WIDTH", "64"),
    )


def _unwired(text: str) -> str:
    """The .hwh without the net cnn_accel_0/interrupt -> axi_intc_0/intr."""
    for pin in ('INSTANCE="axi_intc_0" PORT="intr"', 'INSTANCE="cnn_accel_0" PORT="interrupt"'):
        text = re.sub(rf"<CONNECTION {pin}\s*/>", "", text)
    return text


def test_an_hwh_without_the_interrupt_pin_runs_on_a_fixed_poll(
    sim: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sim.use_board("ultra96v2")
    with caplog.at_level("WARNING", logger="fpga_serve.hw.pynq_device"):
        device = PynqDevice(overlay(tmp_path, "ultra96v2", edit=_unwired))
    assert device.interrupt is None
    assert re.search(
        r"fpga_cnn\.hwh wires no interrupt pin cnn_accel_0/interrupt .*: runs end on a 0\.1 ms "
        r"STATUS poll",
        caplog.text,
    )
    data = RNG.normal(0, 1, (2, 12, 12, 3)).astype(np.float32)
    program = compile_model(
        network(), data, CompileOptions(calibration_method="max", target="ultra96v2")
    ).program
    x = quantize_input(data, program.input_scale)
    loaded = device.load(program)
    sim.accelerator.latency_s = 0.01
    fired = sim.uio.fired
    assert np.array_equal(loaded.run(x), TwinDevice().load(program).run(x))
    assert sim.uio.fired == fired


def test_the_default_overlay_is_the_boards_build(
    sim: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # On the simulated board: a simulation image of its preset beside its committed .hwh.
    sim.use_board("kv260")
    device = PynqDevice()
    assert device.hwh_preset is BOARDS["kv260"].preset
    assert (
        device.bitfile.with_suffix(".hwh").read_text()
        == (ROOT / "bitstreams" / "boards" / "kv260" / "fpga_cnn.hwh").read_text()
    )
    # On a board: this installation's build for $BOARD, which must exist.
    monkeypatch.delattr(type(sim), "default_overlay")
    sim.use_board("pynq_z2")
    with pytest.raises(
        DeviceError,
        match=r"bitstreams/boards/pynq_z2/fpga_cnn\.bit does not exist: build it with "
        r"`fpga-serve overlay build --board pynq_z2`",
    ):
        PynqDevice()
    monkeypatch.setattr(sim, "pynq_board", "no-such-board")
    monkeypatch.delenv("BOARD", raising=False)
    with pytest.raises(DeviceError, match=r"the board is unknown .*pass --overlay"):
        PynqDevice()


def test_a_sim_board_keeps_nothing_of_the_previous_one(sim: Any, tmp_path: Path) -> None:
    sim.use_board("pynq_z2")
    PynqDevice(overlay(tmp_path / "a", "pynq_z2"))
    sim.use_board("zcu104")
    shutil.rmtree(tmp_path / "a")
    device = PynqDevice(overlay(tmp_path / "b", "zcu104"))
    assert device.mmio.base_addr == BOARDS["zcu104"].control_base and sim.arch == "aarch64"


def test_per_layer_cycles_become_metrics_and_inspect_prints_the_cma_footprint(
    sim: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fpga_serve.build import inspect
    from fpga_serve.hw.pynq_device import device_memory
    from fpga_serve.pipeline import FpgaStage, ModelDefinition
    from fpga_serve.service.metrics import Metrics

    sim.use_board("zcu104")
    device = PynqDevice(overlay(tmp_path, "zcu104"))
    data = RNG.normal(0, 1, (4, 12, 12, 3)).astype(np.float32)
    compiled = compile_model(network(), data, CompileOptions(calibration_method="max"))
    program = compiled.program
    metrics = Metrics()
    device.cycles_hook = metrics.device_cycles_hook("pynq")
    sim.accelerator.perf_model = lambda i: 1000 + 7 * i  # the counters a run leaves
    try:
        loaded = device.load(program)
        x = quantize_input(data, program.input_scale)
        loaded.run(x[:2])
        loaded.run(x[:1])
    finally:
        sim.accelerator.perf_model = None
    digest = loaded.digest[:12]
    value = metrics.registry.get_sample_value
    assert value("fpga_serve_device_program_runs_total", {"device": "pynq", "program": digest}) == 2
    for i, instr in enumerate(program.instrs):
        labels = {"device": "pynq", "program": digest, "layer": f"{i:03d} {instr.name}"}
        assert value("fpga_serve_device_layer_cycles_total", labels) == 2 * (1000 + 7 * i)
    # fpga-serve inspect: the board memory the program takes, per batch size.
    model_def = ModelDefinition(name="net")
    model_def.pipeline.append(FpgaStage(compiled))
    model_def.save(tmp_path / "net.zip")
    capsys.readouterr()
    inspect(type("Ns", (), {"zip": tmp_path / "net.zip"})())
    out = capsys.readouterr().out
    image = loaded.image
    assert (
        f"device memory on a zcu104 board (CMA): {image.descriptors.size:,} B of descriptors" in out
    )
    each = device_memory(image, 1)
    assert f"batch 8: {sum(device_memory(image, 8).values()) / 2**20:.1f} MiB" in out
    assert digest in out
    kib = {k: f"{v / 2**10:,.1f} KiB" for k, v in each.items()}
    assert f"{kib['input']} input, {kib['output']} output, {kib['scratch']} scratch" in out
    # what the driver allocated: weights and descriptors once, the three regions for batch 2
    sizes = [r.size for r in (loaded.weights, loaded.descs, *loaded.regions)]
    held = device_memory(image, 2)
    assert sizes == [held[k] for k in ("weights", "descriptors", "scratch", "input", "output")]
    assert loaded.cma_bytes(2) == sum(sizes) and loaded.capacity == 2


def test_the_server_wires_each_devices_cycle_counters_to_its_metrics() -> None:
    from fpga_serve.adapters.server import Server
    from fpga_serve.core.settings import ServerSettings
    from fpga_serve.service.devices import DeviceHolder

    server = Server(ServerSettings(device="twin", twin_isolated=False))
    assert server.devices.cycles == server.metrics.device_cycles_hook
    told: list[tuple[str, str]] = []
    holder = DeviceHolder(
        "twin", cycles=lambda name: lambda program, rows: told.append((name, program))
    )
    holder.get().cycles_hook("abc", [])  # type: ignore[misc]
    assert told == [("twin", "abc")]
