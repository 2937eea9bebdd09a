"""Corrupt model zips (issue 10, finding 6): bad deflate data, a bad CRC or a truncated member is
a clean refusal naming the member, at start (the other models load, the bad one is in the
repository index with its reason) and through RepositoryModelLoad (FAILED_PRECONDITION, the old
version keeps serving, the index says why, nothing of a failed reload is applied)."""

from __future__ import annotations

import shutil
from pathlib import Path

import grpc
import numpy as np
import pytest
from fpga_serve.core.errors import ModelLoadError
from fpga_serve.modelzip import validate_archive
from fpga_serve.modelzip.archive import extract_archive
from fpga_serve.modelzip.manifest import MANIFEST_NAME
from fpga_serve_client.protos import grpc_predict_v2_pb2 as v2
from fpga_serve_client.protos import grpc_predict_v2_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hostile import build_widths_model_def, corrupt_zip, infer, largest_member, save
from serving import run_server
from waiting import wait_until

KINDS = ("deflate", "crc", "truncated")


@pytest.fixture(scope="module")
def zips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("corrupt")
    good = save(build_widths_model_def(scale=1.0), root / "scale1.zip")
    other = save(build_widths_model_def(scale=2.0), root / "scale2.zip")
    found = {"good": good, "other": other}
    member = largest_member(good)
    for how in KINDS:
        found[how] = corrupt_zip(good, root / f"{how}.zip", member, how)
        found[f"manifest-{how}"] = corrupt_zip(good, root / f"m-{how}.zip", MANIFEST_NAME, how)
    return found


@pytest.mark.parametrize("how", KINDS)
@pytest.mark.parametrize("where", ["member", "manifest"])
def test_each_corruption_is_a_refusal_naming_the_member(
    zips: dict[str, Path], how: str, where: str, tmp_path: Path
) -> None:
    path = zips[how if where == "member" else f"manifest-{how}"]
    member = largest_member(zips["good"]) if where == "member" else MANIFEST_NAME
    with pytest.raises(ModelLoadError) as err:
        validate_archive(path)
    assert repr(member) in str(err.value), str(err.value)
    assert len(str(err.value)) < 400


def test_extraction_also_refuses_a_member_that_turns_bad(
    zips: dict[str, Path], tmp_path: Path
) -> None:
    """A zip validated, then swapped for a corrupt copy before extraction."""
    manifest = validate_archive(zips["good"])
    with pytest.raises(ModelLoadError, match=repr(largest_member(zips["good"]))):
        extract_archive(zips["deflate"], manifest, tmp_path)


def _repo(root: Path, models: dict[str, dict[int, Path]]) -> Path:
    for name, versions in models.items():
        for version, source in versions.items():
            dest = root / name / str(version) / "model.zip"
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, dest)
    return root


def _index(
    stub: grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub,
) -> dict[tuple[str, str], tuple[str, str]]:
    reply = stub.RepositoryIndex(v2.RepositoryIndexRequest(), timeout=10)
    return {(m.name, m.version): (m.state, m.reason) for m in reply.models}


def _row_sum(
    stub: grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub, model: str
) -> tuple[str, float]:
    request = infer(model, [("x", "FP32", [1, 2])])
    request.inputs[0].contents.fp32_contents.extend([1.0, 2.0])
    reply = stub.ModelInfer(request, timeout=20)
    return reply.model_version, float(np.frombuffer(reply.raw_output_contents[0], "<f4")[0])


def test_a_corrupt_model_at_start_is_reported_and_the_rest_serve(
    zips: dict[str, Path], tmp_path: Path
) -> None:
    member = largest_member(zips["good"])
    repo = _repo(
        tmp_path / "repo",
        {
            "good": {1: zips["good"]},
            "bad": {1: zips["deflate"]},
            "badcrc": {1: zips["crc"]},
            "mixed": {1: zips["good"], 2: zips["truncated"]},
        },
    )
    with (
        run_server([], "--model-repository", str(repo)) as server,
        grpc.insecure_channel(server.address) as channel,
    ):
        stub = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
        index = _index(stub)
        assert index[("good", "1")] == ("READY", "")
        assert index[("mixed", "1")] == ("READY", "")
        for key in (("bad", "1"), ("badcrc", "1"), ("mixed", "2")):
            state, reason = index[key]
            assert state == "UNAVAILABLE" and repr(member) in reason, (key, reason)
        assert _row_sum(stub, "good") == ("1", 3.0)
        assert _row_sum(stub, "mixed") == ("1", 3.0)
        health = health_pb2_grpc.HealthStub(channel)
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == 1


def test_a_failed_reload_changes_nothing_and_the_index_says_why(
    zips: dict[str, Path], tmp_path: Path
) -> None:
    member = largest_member(zips["good"])
    repo = _repo(tmp_path / "repo", {"widths": {1: zips["good"], 2: zips["good"]}})
    with (
        run_server([], "--model-repository", str(repo)) as server,
        grpc.insecure_channel(server.address) as channel,
    ):
        stub = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
        assert _row_sum(stub, "widths") == ("2", 3.0)
        # A new version 3 that is corrupt, version 1 replaced by another model, version 2 gone:
        # refused as a whole, so version 1 is not replaced and version 2 is not unloaded.
        shutil.copyfile(zips["other"], repo / "widths" / "1" / "model.zip")
        shutil.rmtree(repo / "widths" / "2")
        _repo(repo, {"widths": {3: zips["deflate"]}})
        with pytest.raises(grpc.RpcError) as err:
            stub.RepositoryModelLoad(v2.RepositoryModelLoadRequest(model_name="widths"), timeout=60)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION, err.value.details()
        assert "version 3" in err.value.details() and repr(member) in err.value.details()
        assert _row_sum(stub, "widths") == ("2", 3.0)  # the old version keeps serving
        request = infer("widths", [("x", "FP32", [1, 2])])
        request.model_version = "1"
        request.inputs[0].contents.fp32_contents.extend([1.0, 2.0])
        reply = stub.ModelInfer(request, timeout=20)
        assert float(np.frombuffer(reply.raw_output_contents[0], "<f4")[0]) == 3.0  # not swapped
        index = _index(stub)
        assert index[("widths", "1")][0] == "READY"
        assert index[("widths", "2")][0] == "READY"
        state, reason = index[("widths", "3")]
        assert state == "UNAVAILABLE" and repr(member) in reason, reason
        health = health_pb2_grpc.HealthStub(channel)
        check = health_pb2.HealthCheckRequest(service="widths")
        assert health.Check(check, timeout=5).status == health_pb2.HealthCheckResponse.SERVING

        # Fixed: the same call applies all of it at once.
        shutil.copyfile(zips["other"], repo / "widths" / "3" / "model.zip")
        stub.RepositoryModelLoad(v2.RepositoryModelLoadRequest(model_name="widths"), timeout=60)
        wait_until(lambda: ("widths", "2") not in _index(stub), what="version 2 unloaded")
        index = _index(stub)
        assert index[("widths", "3")] == ("READY", "") and index[("widths", "1")] == ("READY", "")
        assert _row_sum(stub, "widths") == ("3", 6.0)
