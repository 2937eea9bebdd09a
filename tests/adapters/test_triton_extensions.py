"""Triton's model configuration, statistics and classification extensions, read with NVIDIA's
tritonclient (its own venv, tests/helpers/triton_extensions_probe.py) from a server with known
settings: the configuration says what the server runs, the statistics count what the probe
sent, and class_count answers Triton's "score:index:label" strings of the real scores."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import external_tools
import numpy as np
import pytest
from conftest import LABELS
from fpga_serve.adapters.convert.triton import classify
from fpga_serve.core.errors import InvalidInput
from serving import run_server

REQUESTS = 4  # each of 2 images


@pytest.fixture(scope="module")
def probed(tiny_zip: Path, photo_dir: Path) -> dict[str, Any]:
    settings = [
        "--max-batch-size", "16", "--batch-max-size", "4", "--batch-max-queue-delay-us", "500",
        "--batch-preferred-sizes", "2", "--batch-preferred-sizes", "4",
        "--max-queue-size", "33", "--batch-concurrency", "2",
    ]  # fmt: skip
    with run_server([tiny_zip], *settings) as server:
        return external_tools.triton_probe(
            "triton_extensions_probe.py",
            server.address,
            "tiny",
            str(photo_dir / "china.jpg"),
            str(REQUESTS),
        )


def test_model_config_describes_what_the_server_runs(probed: dict[str, Any]) -> None:
    config = probed["config"]
    assert config["name"] == "tiny" and config["platform"] == "fpga_serve_pipeline"
    assert config["max_batch_size"] == 16  # --max-batch-size: items per request
    (inp,) = config["input"]
    assert inp["name"] == "images" and inp["data_type"] == "TYPE_STRING"
    assert inp.get("dims", []) == []  # shape [-1]: the batch only
    (out,) = config["output"]
    assert out["data_type"] == "TYPE_FP32" and out["dims"] == [str(len(LABELS))]
    assert out["label_filename"] == "labels.txt"
    dynamic = config["dynamic_batching"]
    assert dynamic["preferred_batch_size"] == [2, 4]
    assert dynamic["max_queue_delay_microseconds"] == "500"
    assert dynamic["default_queue_policy"]["max_queue_size"] == 33
    assert config["parameters"]["fpga_serve.batch_max_size"]["string_value"] == "4"
    (group,) = config["instance_group"]
    assert group["count"] == 2 and group["kind"] == "KIND_MODEL"
    assert config["version_policy"]["specific"]["versions"] == ["1"]
    assert {"model_configuration", "statistics", "classification"} <= set(probed["extensions"])


def _count(stats: dict[str, Any], *path: str) -> int:
    node: Any = stats
    for key in path:
        node = node.get(key, {})
    return int(node or 0)


def test_statistics_count_the_requests_items_and_executions(probed: dict[str, Any]) -> None:
    (before,), (after,) = probed["before"], probed["after"]
    assert (after["name"], after["version"]) == ("tiny", "1")
    sent = REQUESTS  # REQUESTS - 1 classified + 1 plain, each a batch of 2
    assert (
        _count(after, "inference_stats", "success", "count")
        - _count(before, "inference_stats", "success", "count")
        == sent
    )
    assert _count(after, "inference_count") - _count(before, "inference_count") == 2 * sent
    executions = _count(after, "execution_count") - _count(before, "execution_count")
    assert 1 <= executions <= sent  # dynamic batching may merge requests
    infer = after["inference_stats"]
    assert _count(infer, "compute_infer", "count") == _count(after, "execution_count")
    assert _count(infer, "compute_infer", "ns") > 0
    assert _count(infer, "queue", "count") == _count(infer, "success", "count")
    assert _count(infer, "success", "ns") >= _count(infer, "compute_infer", "ns")
    assert _count(infer, "fail", "count") == 0
    by_size = {int(b["batch_size"]): b for b in after["batch_stats"]}
    assert sum(_count(b, "compute_infer", "count") for b in by_size.values()) == executions
    assert sum(size * _count(b, "compute_infer", "count") for size, b in by_size.items()) == (
        _count(after, "inference_count")
    )
    assert int(after["last_inference"]) > 0
    assert [s["name"] for s in probed["all"]] == ["tiny"]


def test_class_count_answers_the_best_classes_of_the_real_scores(probed: dict[str, Any]) -> None:
    scores = np.array(probed["scores"], dtype=np.float32)
    assert scores.shape == (2, len(LABELS))
    expected = [
        [f"{scores[row, i]:f}:{i}:{LABELS[i]}" for i in np.argsort(-scores[row], kind="stable")[:3]]
        for row in range(2)
    ]
    assert probed["classes"] == expected


def test_classify_rules() -> None:
    scores = np.array([[0.1, 0.7, 0.2, 0.7]], dtype=np.float32)
    got = classify(scores, 2, None, "p")
    assert got.shape == (1, 2) and list(got[0]) == [b"0.700000:1", b"0.700000:3"]  # ties: index
    assert classify(scores, 9, ["a", "b"], "p").shape == (1, 4)  # k is capped at the classes
    assert classify(scores, 1, ["a", "b"], "p")[0, 0] == b"0.700000:1:b"
    with pytest.raises(InvalidInput, match="classification needs numeric"):
        classify(np.zeros((2, 3, 4)), 1, None, "p")


def test_class_count_must_be_a_positive_integer() -> None:
    from fpga_serve.adapters.convert.triton import class_counts
    from fpga_serve_client.protos import grpc_predict_v2_pb2 as v2

    request = v2.ModelInferRequest()
    request.outputs.add(name="plain")
    request.outputs.add(name="p").parameters["classification"].int64_param = 3
    assert class_counts(request) == {"p": 3}
    request.outputs[1].parameters["classification"].string_param = "3"
    with pytest.raises(InvalidInput, match="must be an integer class count, not string_param"):
        class_counts(request)
    request.outputs[1].parameters["classification"].int64_param = 0
    with pytest.raises(InvalidInput, match="class count 0 must be at least 1"):
        class_counts(request)
