"""The packer (core/descriptors.py), the planner (compiler/plan.py) and the twin's packed executor
(hw/twin/packed.py): the same programs give the same tensors through the bytes as through the
logical program, on every preset; the packing inverts; the rules refuse what they must."""

from __future__ import annotations

import dataclasses
import functools
import re

import numpy as np
import pytest
from fpga_serve.compiler.plan import plan
from fpga_serve.core import descriptors
from fpga_serve.core.errors import CompileError, ModelLoadError
from fpga_serve.core.isa import PRESETS, SPACES, Opcode, Preset, Program, quantize_input
from fpga_serve.hw.twin import executor, numpy_path, packed, reference

RNG = np.random.default_rng(21)


@functools.cache
def _zoo(family: str, size: int = 32) -> Program:
    from fpga_serve.models import ZOO

    zoo = ZOO[family](None, input_size=size)
    calib = RNG.normal(0, 50, (2, size, size, 3)).astype(np.float32)
    return zoo.compile(calib).compiled.program


def _x(program: Program, n: int = 2) -> np.ndarray:
    data = RNG.normal(0, 50, (n, *program.input_shape())).astype(np.float32)
    return quantize_input(data, program.input_scale)


@pytest.mark.parametrize("family", ["resnet50", "densenet121", "vgg16"])
def test_the_packed_program_computes_the_logical_program_on_every_preset(family: str) -> None:
    program = _zoo(family)
    x = _x(program)
    want = executor.execute(program, x, numpy_path)
    for name, preset in _fitting(family).items():
        image = descriptors.pack(plan(program, preset))
        assert np.array_equal(packed.run(image, x, numpy_path), want), name


def _fitting(family: str) -> dict[str, Preset]:
    """Every preset but tiny_z7 for VGG-16, whose 3 rows of 32 x 64 channels need 384 words."""
    return {k: v for k, v in PRESETS.items() if not (family == "vgg16" and k == "tiny_z7")}


def test_a_layer_that_does_not_fit_a_preset_is_a_compile_error_naming_it() -> None:
    with pytest.raises(CompileError, match=r"block1_conv2.*does not fit preset tiny_z7"):
        plan(_zoo("vgg16"), PRESETS["tiny_z7"])


def test_the_packed_executor_on_the_reference_ops() -> None:
    program = _zoo("resnet50")
    x = _x(program, 1)
    image = descriptors.pack(program)
    assert np.array_equal(packed.run(image, x, reference), executor.execute(program, x, reference))


def test_decode_gives_back_every_constant_in_the_arrays_order() -> None:
    for family in ("resnet50", "densenet121"):
        program = _zoo(family)
        for preset in (PRESETS["zcu104"], PRESETS["tiny_z7"]):
            planned = plan(program, preset)
            image = descriptors.pack(planned)
            table = image.table()
            folded = 0
            for row, instr in zip(table, planned.instrs, strict=True):
                off, n = int(row["wgt_offset"]), int(row["wgt_bytes"])
                dec = descriptors.decode(row, image.weights[off : off + n], preset)
                if instr.op is Opcode.CONV:
                    assert np.array_equal(dec.weight, program.weights[instr.weight])
                    assert np.array_equal(dec.bias, program.weights[instr.bias])
                    assert np.array_equal(dec.shift, program.weights[instr.shift])
                    folded += bool(instr.tile and instr.tile.fold)
            # the 7x7 stem over 3 channels folds where its 21 lanes fit the array
            assert folded >= (1 if preset.array_ci >= 21 else 0), (family, preset.name)


def test_weights_of_minus_128_are_refused_at_pack_time() -> None:
    program = _zoo("vgg16")
    conv = next(i for i in program.instrs if i.op is Opcode.CONV)
    weights = list(program.weights)
    w = weights[conv.weight].copy()
    w.reshape(-1)[7] = -128
    weights[conv.weight] = w
    with pytest.raises(descriptors.PackError, match="-128"):
        descriptors.pack(dataclasses.replace(program, weights=weights))
    # ... and the quantiser never makes one
    assert all((program.weights[i.weight] >= -127).all() for i in program.instrs if i.weight >= 0)


def test_placement_never_shares_bytes_between_live_buffers() -> None:
    for family in ("resnet50", "densenet121", "vgg16"):
        program = _zoo(family)
        for preset in _fitting(family).values():
            planned = plan(program, preset)
            assert planned.placement is not None
            offsets = planned.placement.offsets
            live: dict[int, list[int]] = {}
            for i, instr in enumerate(planned.instrs):
                assert instr.tile is not None
                refs = [*instr.inputs, instr.output] + ([instr.residual] if instr.residual else [])
                for r in refs:
                    if offsets[r.buffer] >= 0:
                        live.setdefault(r.buffer, [i, i])[1] = i
            live.setdefault(planned.input.buffer, [-1, -1])[0] = -1
            live.setdefault(planned.output.buffer, [len(planned.instrs)] * 2)[1] = len(
                planned.instrs
            )
            spaces = planned.placement.spaces
            # the network's input and output alone in their own regions, at offset 0
            assert spaces[planned.input.buffer] == SPACES["IN"]
            assert spaces[planned.output.buffer] == SPACES["OUT"]
            assert offsets[planned.input.buffer] == offsets[planned.output.buffer] == 0
            assert spaces.count(SPACES["IN"]) == spaces.count(SPACES["OUT"]) == 1
            spans = []
            for b, (lo, hi) in live.items():
                buf = planned.buffers[b]
                end = offsets[b] + buf.height * buf.width * buf.channels
                spans.append((spaces[b], offsets[b], end, lo, hi))
            bounds = planned.placement.region_bytes()
            for a in spans:
                for b in spans:
                    if a is not b and a[0] == b[0] and a[3] <= b[4] and b[3] <= a[4]:
                        assert a[2] <= b[1] or b[2] <= a[1], (family, preset.name, a, b)
                assert a[2] <= bounds[a[0]]


def test_resnet50_keeps_its_activations_on_chip_on_the_zcu104() -> None:
    program = _zoo("resnet50", 64)
    image = descriptors.pack(program)
    # the input and the output in their own regions; nothing else reaches DDR
    assert (image.input_bytes, image.output_bytes, image.image_bytes) == (64 * 64 * 3, 2048, 64)
    tiles = [i.tile for i in program.instrs if i.tile is not None]
    assert sum(t.out_ddr for t in tiles) == 1 and sum(not t.in_ibuf for t in tiles) == 1
    assert sum(i.residual is not None for i in program.instrs) == 16


def test_features_and_rules() -> None:
    for preset in PRESETS.values():
        words = descriptors.features(preset)
        got = descriptors.read_features(words)
        assert {k: got[k] for k in preset.shape()} == preset.shape()
    image = descriptors.pack(_zoo("vgg16"))
    row = image.table()[0].copy()
    bounds = image.region_bytes
    assert descriptors.check(row, image.preset, bounds, image.weights.size) is None
    row["opcode"] = 7
    assert descriptors.check(row, image.preset, bounds, image.weights.size)[0] == "BAD_OPCODE"


@pytest.mark.parametrize("version", ["1.0", "2.0"])
def test_an_older_spec_program_is_refused_with_a_rebuild_message(tmp_path, version) -> None:  # type: ignore[no-untyped-def]
    """1.0 had no tiles; 2.0 put the network's input and output in the activation region (its
    placement has no regions, its descriptors no spaces): both are rebuilt, never run."""
    import json

    program = _zoo("vgg16")
    program.save(tmp_path)
    data = json.loads((tmp_path / "program.json").read_text())
    data["spec_version"] = version
    placement = data["placement"]
    data["placement"] = {"offsets": placement["offsets"], "image_bytes": placement["image_bytes"]}
    (tmp_path / "program.json").write_text(json.dumps(data))
    with pytest.raises(ModelLoadError, match=rf"spec '{re.escape(version)}'.*rebuild"):
        Program.load(tmp_path)
    data["spec_version"] = program.spec_version  # 2.0's placement under 2.1: malformed, never run
    (tmp_path / "program.json").write_text(json.dumps(data))
    with pytest.raises(ModelLoadError, match="malformed FPGA program"):
        Program.load(tmp_path)


def test_the_compile_target_is_a_preset() -> None:
    from fpga_serve.compiler import CompileOptions

    assert CompileOptions(target="pynq_z2").target == "pynq_z2"
    with pytest.raises(CompileError, match=r"unknown target 'zcu102' \(presets: .*zcu104"):
        CompileOptions(target="zcu102")
    from fpga_serve.cli import build_parser

    ns = build_parser().parse_args(["build", "vgg16", "-o", "x.zip", "--target", "kv260"])
    assert ns.target == "kv260"
