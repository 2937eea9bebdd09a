"""ONNX stages: saved, loaded and served through ONNX Runtime; untrusted models with external
data or custom operators are refused before ONNX Runtime sees them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnx
import pytest
from fpga_serve.core.errors import InvalidInput, ModelLoadError
from fpga_serve.core.types import DType, TensorSpec
from fpga_serve.modelzip import LoadContext, load_pipeline, save_pipeline
from fpga_serve.modelzip.stages import SavedStage
from fpga_serve.modelzip.stages.onnx_stage import OnnxStage
from fpga_serve.pipeline import ModelDefinition
from fpga_serve_client.protos import grpc_predict_v2_pb2 as v2
from fpga_serve_client.protos import grpc_predict_v2_pb2_grpc
from hostile import code_of, infer
from onnx import TensorProto, helper, numpy_helper
from serving import run_server

SHAPE = (4, 4, 3)
BASE = np.arange(5, dtype=np.float32)


def means_model(extra_nodes: list[Any] | None = None, **model_fields: Any) -> onnx.ModelProto:
    """UINT8 [N,4,4,3] -> FP32 [N,5]: BASE + each item's mean (a double-precision mean)."""
    nodes = [
        helper.make_node("Cast", ["x"], ["wide"], to=TensorProto.DOUBLE),
        helper.make_node("ReduceMean", ["wide"], ["mean"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Cast", ["mean"], ["mean32"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mean32", "one"], ["column"]),
        helper.make_node("Add", ["base", "column"], ["y"]),
        *(extra_nodes or []),
    ]
    graph = helper.make_graph(
        nodes,
        "means",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, ["N", *SHAPE])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", len(BASE)])],
        initializer=[
            numpy_helper.from_array(BASE[None, :], "base"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "one"),
        ],
    )
    opsets = [helper.make_opsetid("", 17), *model_fields.pop("opsets", [])]
    return helper.make_model(graph, opset_imports=opsets, **model_fields)


def expected(x: np.ndarray) -> np.ndarray:
    means = x.reshape(len(x), -1).mean(axis=1, dtype=np.float64).astype(np.float32)
    return BASE[None, :] + means[:, None]


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *SHAPE), dtype=np.uint8)


class RawOnnx:
    """What an attacker's tool writes: any bytes as the stage's model.onnx, any specs and
    options in the manifest (the archive itself is well formed, hashes and all)."""

    kind = "onnx"
    name = "evil"

    def __init__(self, data: bytes, specs: Any = None, options: Any = None) -> None:
        self.data = data
        self.specs = specs or (
            (TensorSpec("x", DType.UINT8, (-1, *SHAPE)),),
            (TensorSpec("y", DType.FP32, (-1, len(BASE))),),
        )
        self.options = {"threads": 1} if options is None else options

    def save(self, dest: Path) -> SavedStage:
        dest.mkdir(parents=True, exist_ok=True)
        (dest / "model.onnx").write_bytes(self.data)
        return SavedStage(*self.specs, self.options)


def _zip(path: Path, model: onnx.ModelProto) -> Path:
    model_def = ModelDefinition(name="means")
    model_def.pipeline.append(OnnxStage(model))
    model_def.save(path)
    return path


def test_an_onnx_stage_round_trips_and_computes_exactly(tmp_path: Path) -> None:
    archive = load_pipeline(_zip(tmp_path / "m.zip", means_model()), LoadContext())
    try:
        stage = archive.stages[0]
        assert stage.kind == "onnx"
        assert stage.inputs == (TensorSpec("x", DType.UINT8, (-1, *SHAPE)),)
        assert stage.outputs == (TensorSpec("y", DType.FP32, (-1, len(BASE))),)
        x = images(3)
        readonly = np.frombuffer(x.tobytes(), dtype=np.uint8).reshape(x.shape)  # as decoded
        (got,) = stage.run([readonly])
        np.testing.assert_array_equal(got, expected(x))
    finally:
        archive.close()


def _external(tensor: TensorProto) -> TensorProto:
    tensor.data_location = TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "../../../../etc/hostname"
    tensor.ClearField("raw_data")
    return tensor


def _with_external_initializer() -> onnx.ModelProto:
    model = means_model()
    _external(model.graph.initializer[0])
    return model


def _with_external_constant_in_a_branch() -> onnx.ModelProto:
    """The external tensor hides in a Constant inside an If branch (a subgraph)."""
    branch = helper.make_graph(
        [helper.make_node("Constant", [], ["c"], value=_external(numpy_helper.from_array(BASE)))],
        "then",
        [],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [len(BASE)])],
    )
    other = helper.make_graph(
        [helper.make_node("Constant", [], ["d"], value=numpy_helper.from_array(BASE))],
        "else",
        [],
        [helper.make_tensor_value_info("d", TensorProto.FLOAT, [len(BASE)])],
    )
    cond = numpy_helper.from_array(np.array(True), "cond")
    model = means_model(
        [helper.make_node("If", ["cond"], ["unused"], then_branch=branch, else_branch=other)]
    )
    model.graph.initializer.append(cond)
    return model


def _with_custom_operator() -> onnx.ModelProto:
    return means_model(
        [helper.make_node("Exfiltrate", ["x"], ["z"], domain="evil.ops")],
        opsets=[helper.make_opsetid("evil.ops", 1)],
    )


HOSTILE = {
    "external initializer": (_with_external_initializer, "external file"),
    "external tensor in a subgraph": (_with_external_constant_in_a_branch, "external file"),
    "custom operator": (_with_custom_operator, "evil.ops"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_models_are_refused_at_save_and_at_load(tmp_path: Path, case: str) -> None:
    build, words = HOSTILE[case]
    model = build()
    with pytest.raises(InvalidInput, match=words):
        OnnxStage(model)
    path = tmp_path / "evil.zip"
    save_pipeline([RawOnnx(model.SerializeToString())], path, "evil")
    with pytest.raises(ModelLoadError, match=words):
        load_pipeline(path, LoadContext())


def test_bad_files_options_and_specs_are_refused_at_load(tmp_path: Path) -> None:
    good = means_model().SerializeToString()
    cases = {
        "not onnx": (RawOnnx(b"\xff\xfe not a protobuf"), "not an ONNX model"),
        "threads": (RawOnnx(good, options={"threads": 0}), "threads must be"),
        "specs": (
            RawOnnx(
                good,
                specs=(
                    (TensorSpec("x", DType.FP32, (-1, *SHAPE)),),
                    (TensorSpec("y", DType.FP32, (-1, len(BASE))),),
                ),
            ),
            "the manifest says",
        ),
    }
    for name, (stage, words) in cases.items():
        path = tmp_path / f"{name}.zip"
        save_pipeline([stage], path, "bad")
        with pytest.raises(ModelLoadError, match=words):
            load_pipeline(path, LoadContext())


def test_bad_data_is_invalid_input_naming_the_stage_and_the_stage_keeps_working(
    tmp_path: Path,
) -> None:
    table = numpy_helper.from_array(np.arange(4, dtype=np.float32), "table")
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "i"], ["v"], axis=0)],
        "lookup",
        [helper.make_tensor_value_info("i", TensorProto.INT64, ["N"])],
        [helper.make_tensor_value_info("v", TensorProto.FLOAT, ["N"])],
        initializer=[table],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model_def = ModelDefinition(name="lookup")
    model_def.pipeline.append(OnnxStage(model, name="lookup"))
    archive = load_pipeline(model_def.save(tmp_path / "lookup.zip"), LoadContext())
    try:
        runner = archive.stages[0]
        with pytest.raises(InvalidInput, match=r"'lookup' cannot process.*out of data bounds"):
            runner.run([np.array([9])])
        assert runner.run([np.array([3, 1])])[0].tolist() == [3.0, 1.0]
    finally:
        archive.close()


def test_an_onnx_only_server_never_imports_tensorflow(tmp_path: Path) -> None:
    path = _zip(tmp_path / "m.zip", means_model())
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from fpga_serve.service import Metrics, ModelRegistry\n"
        "from fpga_serve.modelzip import LoadContext\n"
        f"repo = ModelRegistry(LoadContext, Metrics()); repo.load(Path({str(path)!r}))\n"
        "print(sorted(m for m in ('tensorflow', 'keras', 'onnxruntime') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.split("\n")[-2] == "['onnxruntime']", done.stdout + done.stderr


def test_an_onnx_stage_loads_after_an_in_process_twin_made_the_global_pool(
    tmp_path: Path,
) -> None:
    """The twin's GEMMs make ONNX Runtime's process-wide thread pool (hw/twin/gemm.py); an ONNX
    stage loaded after it in the same process must share that pool, not fail."""
    path = _zip(tmp_path / "m.zip", means_model())
    code = (
        "import numpy as np\n"
        "from pathlib import Path\n"
        "from fpga_serve.hw.twin.gemm import Int8Gemm\n"
        "from fpga_serve.modelzip import LoadContext, load_pipeline\n"
        "Int8Gemm(np.ones((4, 4), np.int8))\n"
        f"stage = load_pipeline(Path({str(path)!r}), LoadContext()).stages[0]\n"
        "x = np.full((1, 4, 4, 3), 6, np.uint8)\n"
        "print(stage.run([x])[0].tolist())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == str([(BASE + 6).tolist()])


def test_served_onnx_model_answers_raw_uint8_over_kserve_v2(tmp_path: Path) -> None:
    path = _zip(tmp_path / "m.zip", means_model())
    x = images(2, seed=3)
    with run_server([path]) as server, grpc.insecure_channel(server.address) as channel:
        stub = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
        request = infer("means", [("x", "UINT8", [2, *SHAPE])], [x.tobytes()])
        response = stub.ModelInfer(request, timeout=30)
        got = np.frombuffer(response.raw_output_contents[0], dtype=np.float32).reshape(2, -1)
        np.testing.assert_array_equal(got, expected(x))
        wrong = infer("means", [("x", "FP32", [1, *SHAPE])], [np.zeros(48, np.float32).tobytes()])
        code, details = code_of(stub.ModelInfer, wrong, timeout=30)
        assert code == "INVALID_ARGUMENT" and "expected UINT8" in details
        again = stub.ModelInfer(request, timeout=30)
        assert again.raw_output_contents[0] == response.raw_output_contents[0]
        meta = stub.ModelMetadata(v2.ModelMetadataRequest(name="means"), timeout=30)
        assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [
            ("x", "UINT8", [-1, *SHAPE])
        ]
