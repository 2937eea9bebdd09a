"""Calibration observers, scale sharing, weight quantisation and requantisation constants,
analyses against the lowered program, and weight-file checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fpga_serve.compiler import CompileOptions, compile_model
from fpga_serve.compiler.analysis import node_macs, node_weight_bytes, totals
from fpga_serve.compiler.calibration import MaxAbs, Percentile, assign_scales
from fpga_serve.compiler.ir import Graph, Node
from fpga_serve.compiler.quantize import quantize_conv, requant_pair
from fpga_serve.compiler.weights import check_weights, weight_mismatches
from fpga_serve.core.errors import CompileError
from fpga_serve.core.isa import quantize_multiplier
from fpga_serve.hw.twin import reference

RNG = np.random.default_rng(11)


@pytest.mark.parametrize("p", [90.0, 99.0, 99.9, 99.99, 100.0])
@pytest.mark.parametrize("split", [1, 3, 7])
def test_percentile_is_exact_over_all_values_whatever_the_batching(p: float, split: int) -> None:
    data = RNG.standard_t(3, (7, 9, 9, 5)).astype(np.float32)  # heavy tails
    data[:, :3] = 0.0  # many ties, as after a ReLU
    obs = Percentile(p, data.size)
    for chunk in np.array_split(data, split):
        obs.update(chunk)
    want = float(np.percentile(np.abs(data), p))
    assert obs.result() == pytest.approx(want, rel=1e-6)
    assert obs.top.size <= data.size * (100 - p) / 100 + 2  # only the tail is kept


def test_percentile_counts_what_it_saw_and_max_is_the_peak() -> None:
    obs = Percentile(99.0, 100)
    obs.update(np.ones(50, np.float32))
    with pytest.raises(CompileError, match="saw 50 values, expected 100"):
        obs.result()
    data = RNG.normal(0, 1, 1000)
    peak = MaxAbs()
    for chunk in np.array_split(data, 4):
        peak.update(chunk)
    assert peak.result() == float(np.abs(data).max())


def test_concat_and_max_pool_share_scales() -> None:
    nodes = [
        Node("in", "input", [], (4, 4, 2)),
        Node("a", "relu", ["in"], (4, 4, 2)),
        Node("m", "maxpool", ["a"], (2, 2, 2), {"kernel": (2, 2), "stride": 2, "pad": (0,) * 4}),
        Node("b", "relu", ["in"], (4, 4, 2)),
        Node("p", "avgpool", ["b"], (2, 2, 2), {"kernel": (2, 2), "stride": 2, "pad": (0,) * 4}),
        Node("cat", "concat", ["m", "p"], (2, 2, 4)),
        Node("g", "gap", ["cat"], (1, 1, 4)),
    ]
    ranges = {"in": 3.0, "a": 2.0, "m": 1.5, "b": 5.0, "p": 4.0, "cat": 4.0, "g": 0.0}
    scales, groups = assign_scales(Graph(nodes, "g"), ranges)
    shared = {"a", "m", "p", "cat"}
    assert {scales[n] for n in shared} == {4.0 / 127}  # the group's largest range
    assert scales["b"] == 5.0 / 127 and scales["in"] == 3.0 / 127
    assert 0 < scales["g"] < 1e-6  # a dead tensor gets a tiny scale
    assert [set(g) for g in groups] == [shared]


def test_requant_pair_matches_the_isa_and_clamps_without_changing_outputs() -> None:
    for real in (1e-9, 3.3e-5, 0.01, 0.7, 1.0, 5.5, 1234.5):
        assert requant_pair(real) == quantize_multiplier(real)
    acc = np.array([-(2**31) + 1, -(2**20), -1, 0, 1, 2**20, 2**31 - 1], np.int64)
    for real in (1e-12, 2.0**-33):  # below the multiplier's range
        m, s = requant_pair(real)
        got = reference.requantize(acc, np.array([m]), np.array([s]), False)
        want = np.clip(np.rint(acc * real), -128, 127).astype(np.int8)
        assert np.array_equal(got, want)
    for real in (2.0**30, 1e12):  # above it: every nonzero accumulator saturates
        m, s = requant_pair(real)
        got = reference.requantize(acc, np.array([m]), np.array([s]), False)
        assert np.array_equal(got, np.sign(acc).clip(-1, 1) * np.where(acc < 0, 128, 127))
    with pytest.raises(CompileError):
        requant_pair(0.0)


def test_quantize_conv_uses_each_channels_own_range() -> None:
    w = RNG.normal(0, 0.1, (3, 3, 16, 3)).astype(np.float32)
    w[..., 1] *= 100  # channels at very different scales
    w[..., 2] = 0.0  # a dead channel
    b = np.array([0.1, -3.0, 0.2], np.float32)
    s_in, s_out = 0.05, 0.1
    q = quantize_conv(w, b, s_in, s_out)
    assert q.weight.dtype == np.int8 and q.bias.dtype == np.int32
    for c in (0, 1):
        assert np.abs(q.weight[..., c]).max() == 127
        err = np.abs(q.weight[..., c] * q.weight_scale[c] - w[..., c]).max()
        assert err <= q.weight_scale[c] / 2 + 1e-9
        assert abs(q.bias[c] * s_in * q.weight_scale[c] - b[c]) <= s_in * q.weight_scale[c] / 2
        m, s = q.multiplier[c], q.shift[c]
        assert m * 2.0 ** -float(s) == pytest.approx(s_in * q.weight_scale[c] / s_out, rel=1e-9)
    assert not q.weight[..., 2].any()


def test_a_large_bias_cannot_overflow_the_accumulator() -> None:
    # With weight scale max|w|/127 this bias would need 1.3e11 in int32; the channel's scale
    # is raised instead, so even the worst-case input stays below 2^31.
    w = np.ones((3, 3, 16, 2), np.float32)
    b = np.array([1e9, -1e9], np.float32)
    q = quantize_conv(w, b, 1.0, 1.0)
    for value in (127, -128):
        x = np.full((1, 3, 3, 16), value, np.int8)
        reference.conv(x, q.weight, q.bias, q.multiplier, q.shift, 1, (0, 0, 0, 0), False)
    np.testing.assert_allclose(q.bias * q.weight_scale, b, rtol=1e-6)


def _small_cnn(keras_: Any) -> Any:
    inp = keras_.Input((16, 16, 3))
    x = keras_.layers.ZeroPadding2D(1)(inp)
    x = keras_.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    y = keras_.layers.Conv2D(8, 3, padding="same")(x)
    x = keras_.layers.ReLU()(keras_.layers.Add()([x, y]))
    x = keras_.layers.MaxPooling2D(2)(x)
    z = keras_.layers.Conv2D(4, 1)(x)
    x = keras_.layers.Concatenate()([x, z])
    x = keras_.layers.BatchNormalization()(x)
    x = keras_.layers.AveragePooling2D(2)(x)
    x = keras_.layers.GlobalAveragePooling2D()(x)
    return keras_.Model(inp, keras_.layers.Dense(5)(x))


def test_analyses_equal_the_lowered_programs_counts() -> None:
    import keras

    keras.utils.set_random_seed(0)
    compiled = compile_model(_small_cnn(keras), RNG.normal(0, 1, (4, 16, 16, 3)))
    program, graph = compiled.program, compiled.graph
    by_name = {i.name: i for i in program.instrs}
    assert any("+" in name for name in by_name)  # an ADD fused into its CONV (compiler/plan.py)
    parts = {part: name for name in by_name for part in name.split("+")}
    for node in graph:
        if node.name not in parts:
            assert node.op in ("input", "concat") and node_macs(graph, node) == 0
            continue
        instr = by_name[parts[node.name]]
        nodes = [graph.node(part) for part in instr.name.split("+")]
        assert sum(node_macs(graph, n) for n in nodes) == program.macs(instr), node.name
        assert sum(node_weight_bytes(n) for n in nodes) == program.weight_bytes(instr), node.name
    t = totals(graph)
    assert t["macs"] == sum(program.macs(i) for i in program.instrs)
    assert t["weight_bytes"] == sum(program.weight_bytes(i) for i in program.instrs)
    assert [r["macs"] for r in compiled.summary] == [node_macs(graph, n) for n in graph]


def test_weight_files_are_compared_layer_by_layer(tmp_path: Path) -> None:
    import keras

    def model(width: int) -> Any:
        inp = keras.Input((8, 8, 3))
        x = keras.layers.Conv2D(4, 3, name="c1")(inp)
        x = keras.layers.BatchNormalization(name="bn")(x)
        sub = keras.Sequential(
            [keras.Input((6, 6, 4)), keras.layers.Conv2D(width, 1, name="inner")], name="sub"
        )
        x = keras.layers.GlobalAveragePooling2D()(sub(x))
        return keras.Model(inp, keras.layers.Dense(3, name="d")(x))

    good, other = model(2), model(5)
    paths = [tmp_path / "w.weights.h5", tmp_path / "m.keras", tmp_path / "legacy.h5"]
    good.save_weights(paths[0])
    good.save(paths[1])
    good.save(paths[2])  # Keras writes the legacy HDF5 layout for .h5
    for path in paths:
        assert weight_mismatches(good, path) == []
        check_weights(good, path)
        bad = weight_mismatches(other, path)
        assert [m.kind for m in bad] == ["shape", "shape"], path  # inner conv, then dense
        with pytest.raises(CompileError, match=r"'(sub/)?inner'|'sub'"):
            check_weights(other, path)
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(CompileError, match="not a readable Keras weight file"):
        check_weights(good, tmp_path / "junk.h5")


def test_compile_options_validate() -> None:
    with pytest.raises(CompileError, match="percentile"):
        CompileOptions(percentile=50)
    with pytest.raises(CompileError, match="calibration_method"):
        CompileOptions(calibration_method="mse")  # type: ignore[arg-type]
    with pytest.raises(CompileError, match="unknown compile options: colour"):
        CompileOptions.from_json({"colour": "red"})
    opts = CompileOptions(calibration_method="max", calibration_images=3, output_layer="x")
    assert CompileOptions.from_json(opts.to_json()) == opts
