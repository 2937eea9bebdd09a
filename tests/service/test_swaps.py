"""Swaps that change the version number fail nothing (issue 10, finding 9): a request is resolved
once, in the data plane, which retries once when the version it picked was retired."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from fpga_serve.adapters.calls import Runner
from fpga_serve.adapters.kserve import InferenceServicer
from fpga_serve.adapters.tfserving import PredictionServicer
from fpga_serve.modelzip import LoadContext
from fpga_serve.service import DataPlane, Metrics, ModelRegistry
from fpga_serve.service.lifecycle import ModelManager
from fpga_serve_client.protos import grpc_predict_v2_pb2 as v2
from fpga_serve_client.protos import grpc_predict_v2_pb2_grpc, prediction_service_pb2_grpc
from fpga_serve_client.protos import tf_tensor_pb2 as tf
from hostile import build_widths_model_def, infer, predict, save, tensor_proto
from serving import run_server
from waiting import wait_until


class Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code


INLINE = Runner(ThreadPoolExecutor(1), lambda model, version: True)
"""The servicers' bodies run in the test's own thread (the lookup hook sees every lookup)."""


class FakeContext:
    def time_remaining(self) -> float | None:
        return None

    def is_active(self) -> bool:
        return True

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise Aborted(code, details)


@pytest.fixture(scope="module")
def widths_zips(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("swaps")
    return (
        save(build_widths_model_def(scale=1.0), root / "v1.zip"),
        save(build_widths_model_def(scale=2.0), root / "v2.zip"),
    )


@pytest.fixture
def plane(widths_zips: tuple[Path, Path]) -> Iterator[tuple[DataPlane, ModelRegistry]]:
    metrics = Metrics()
    registry = ModelRegistry(LoadContext, metrics)
    registry.load(widths_zips[0], version="1")
    yield DataPlane(registry, metrics), registry
    registry.close()


def _swap_on_first_lookup(registry: ModelRegistry, v2_zip: Path) -> list[str]:
    """Make v2 replace v1 right after the first lookup of the request (the window in which a
    second lookup by the exact version used to fail)."""
    original = registry.get
    seen: list[str] = []

    def get(name: str = "", version: str | None = None) -> Any:
        served = original(name, version)
        seen.append(f"{name}:{version}")
        if len(seen) == 1:
            registry.load(v2_zip, version="2")
            registry.unload("widths", "1")
        return served

    registry.get = get  # type: ignore[method-assign]
    return seen


def test_tf_serving_request_survives_a_swap_between_lookup_and_execution(
    plane: tuple[DataPlane, ModelRegistry], widths_zips: tuple[Path, Path]
) -> None:
    data_plane, registry = plane
    servicer = PredictionServicer(data_plane, INLINE)
    seen = _swap_on_first_lookup(registry, widths_zips[1])
    request = predict("widths", {"x": tensor_proto(tf.DT_FLOAT, [1, 3], float_val=[1, 2, 3])})
    reply = asyncio.run(servicer.Predict(request, FakeContext()))  # type: ignore[arg-type]
    assert reply.model_spec.version.value == 2
    np.testing.assert_allclose(np.frombuffer(reply.outputs["y"].tensor_content, "<f4"), [12.0])
    assert seen[0] == "widths:None"  # resolved by the data plane, from what the request named


def test_v2_request_survives_a_swap_between_lookup_and_execution(
    plane: tuple[DataPlane, ModelRegistry], widths_zips: tuple[Path, Path]
) -> None:
    data_plane, registry = plane
    servicer = InferenceServicer(data_plane, ModelManager(registry), INLINE)
    _swap_on_first_lookup(registry, widths_zips[1])
    request = infer("widths", [("x", "FP32", [1, 2])])
    request.inputs[0].contents.fp32_contents.extend([1.0, 1.0])
    reply = asyncio.run(servicer.ModelInfer(request, FakeContext()))  # type: ignore[arg-type]
    assert reply.model_version == "2"
    np.testing.assert_allclose(np.frombuffer(reply.raw_output_contents[0], "<f4"), [4.0])


def test_swapping_v1_to_v2_under_load_fails_nothing(
    tmp_path: Path, widths_zips: tuple[Path, Path]
) -> None:
    """A repository model moves from version k to k+1 (the old folder removed) six times while
    four clients send requests that name no version, on both protocols."""
    repo = tmp_path / "repo"
    shutil.copyfile(widths_zips[0], _version_zip(repo, 1))
    with (
        run_server([], "--model-repository", str(repo)) as server,
        grpc.insecure_channel(server.address) as channel,
    ):
        kserve = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
        tfs = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        failures: list[str] = []
        versions: set[str] = set()
        answered: list[int] = []  # one entry per reply, of either kind
        done = threading.Event()

        def traffic(use_v2: bool) -> None:
            request: Any
            if use_v2:
                request = infer("widths", [("x", "FP32", [1, 2])])
                request.inputs[0].contents.fp32_contents.extend([1.0, 2.0])
            else:
                request = predict(
                    "widths", {"x": tensor_proto(tf.DT_FLOAT, [1, 2], float_val=[1, 2])}
                )
            end = time.monotonic() + 90
            while not done.is_set() and time.monotonic() < end:
                try:
                    if use_v2:
                        versions.add(kserve.ModelInfer(request, timeout=30).model_version)
                    else:
                        reply = tfs.Predict(request, timeout=30)
                        versions.add(str(reply.model_spec.version.value))
                except grpc.RpcError as exc:
                    failures.append(f"{exc.code().name}: {exc.details()}")
                answered.append(1)

        def flowing() -> None:
            """Eight more replies: at least four of them sent after the last swap returned."""
            start = len(answered)
            wait_until(lambda: len(answered) >= start + 8)

        threads = [threading.Thread(target=traffic, args=(i % 2 == 0,)) for i in range(4)]
        for thread in threads:
            thread.start()
        try:
            for k in range(1, 7):
                flowing()
                shutil.copyfile(widths_zips[k % 2], _version_zip(repo, k + 1))
                shutil.rmtree(repo / "widths" / str(k))
                kserve.RepositoryModelLoad(
                    v2.RepositoryModelLoadRequest(model_name="widths"), timeout=60
                )
            flowing()
        finally:
            done.set()
            for thread in threads:
                thread.join(60)
        index = kserve.RepositoryIndex(v2.RepositoryIndexRequest(), timeout=10)
    assert failures == [], failures[:5]
    assert [(m.version, m.state) for m in index.models if m.name == "widths"] == [("7", "READY")]
    assert versions == {str(v) for v in range(1, 8)}, versions  # each served between swaps


def _version_zip(repo: Path, version: int) -> Path:
    path = repo / "widths" / str(version) / "model.zip"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
