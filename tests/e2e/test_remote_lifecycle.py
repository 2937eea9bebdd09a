"""The remote model lifecycle (fpga_serve.management.ModelService) against a server on
loopback: deploy, run, list, load, unload, delete, and every bad upload leaving nothing behind."""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import external_tools
import grpc
import numpy as np
import pytest
from conftest import LABELS, build_slow_model_def
from fpga_serve_client import PredictionClient, ServiceError
from fpga_serve_client.protos import model_service_pb2 as pb
from fpga_serve_client.protos import model_service_pb2_grpc
from hostile import ARCHIVE_CASES, rewrite_archive
from serving import run_server, scores_in_process
from waiting import wait_until

KEY = "lifecycle-key-90d2"
MESSAGE_LIMIT = 128 << 10
UPLOAD_LIMIT = 1 << 20
AUTH = (("authorization", f"Bearer {KEY}"),)


def padded_zip(path: Path, weight_bytes: int, name: str = "padded") -> Path:
    """A valid one-stage pipeline whose random (incompressible) constant makes the zip big."""
    import tensorflow as tf
    from fpga_serve.pipeline import ModelDefinition, TensorflowStage

    width = weight_bytes // 16
    weights = tf.constant(np.random.default_rng(3).standard_normal((4, width), np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
    def project(x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": tf.reduce_sum(tf.matmul(x, weights), axis=1, keepdims=True)}

    model_def = ModelDefinition(name=name)
    model_def.pipeline.append(TensorflowStage(project))
    model_def.save(path)
    return path


@pytest.fixture(scope="module")
def small_jpeg(china_jpg: bytes) -> bytes:
    """A photo that fits the test server's small message limit."""
    from PIL import Image

    out = io.BytesIO()
    Image.open(io.BytesIO(china_jpg)).convert("RGB").resize((96, 64)).save(out, "JPEG")
    return out.getvalue()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Keys on, an empty repository, 128 KiB messages and a 1 MiB upload limit."""
    repo = tmp_path_factory.mktemp("repo")
    with run_server(
        [],
        "--model-repository",
        str(repo),
        "--max-message-bytes",
        str(MESSAGE_LIMIT),
        "--max-upload-bytes",
        str(UPLOAD_LIMIT),
        env={"FPGA_SERVE_API_KEYS": json.dumps([KEY])},
    ) as running:
        running.repo = repo  # type: ignore[attr-defined]
        yield running


def client_for(server: Any, key: str | None = KEY) -> PredictionClient:
    return PredictionClient(server.address, access_token=key, retries=0)


def stub(channel: grpc.Channel) -> model_service_pb2_grpc.ModelServiceStub:
    return model_service_pb2_grpc.ModelServiceStub(channel)


def repo_contents(server: Any) -> list[str]:
    """Every file and folder in the repository, the staging area included."""
    root: Path = server.repo
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.name != ".staging")


def header(data: bytes, name: str, **fields: Any) -> pb.UploadModelRequest:
    values = {"name": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    values.update(fields)
    return pb.UploadModelRequest(header=pb.UploadHeader(**values))


def raw_upload(server: Any, messages: list[pb.UploadModelRequest]) -> grpc.RpcError:
    with grpc.insecure_channel(server.address) as channel, pytest.raises(grpc.RpcError) as err:
        stub(channel).UploadModel(iter(messages), timeout=30, metadata=AUTH)
    return err.value


def test_deploy_run_and_delete(server: Any, tiny_zip: Path, small_jpeg: bytes) -> None:
    with client_for(server) as client:
        service = client.deploy(tiny_zip, "tiny")
        assert (service.name, service.version, service.status.state) == ("tiny", "1", "READY")
        scores = service.run(small_jpeg)
        np.testing.assert_allclose(scores, scores_in_process(tiny_zip, small_jpeg), rtol=1e-5)
        assert len(scores) == len(LABELS)
        (listed,) = client.models()
        assert (listed.name, listed.state, listed.stored) == ("tiny", "READY", True)
        assert listed.size == tiny_zip.stat().st_size
        stored = server.repo / "tiny" / "1" / "model.zip"
        assert stored.read_bytes() == tiny_zip.read_bytes()
        deleted = service.delete()
        assert [(d.name, d.version, d.state) for d in deleted] == [("tiny", "1", "READY")]
        assert client.models() == []
        with pytest.raises(ServiceError) as err:
            service.run(small_jpeg)
        assert err.value.code == grpc.StatusCode.NOT_FOUND
    assert repo_contents(server) == []


def test_store_load_unload_and_versions(server: Any, tiny_zip: Path, small_jpeg: bytes) -> None:
    with client_for(server) as client:
        first = client.upload(tiny_zip, "versions")
        second = client.upload(tiny_zip, "versions")
        assert [(s.version, s.state, s.reason) for s in (first, second)] == [
            ("1", "UNAVAILABLE", "not loaded"),
            ("2", "UNAVAILABLE", "not loaded"),
        ]
        with pytest.raises(ServiceError) as err:
            client.upload(tiny_zip, "versions", version=2)
        assert err.value.code == grpc.StatusCode.ALREADY_EXISTS
        assert "version 2 is already stored" in err.value.details
        assert client.load_model("versions").version == "2"  # the highest
        assert client.for_model("versions").score_image(small_jpeg).shape == (len(LABELS),)
        with pytest.raises(ServiceError) as err:
            client.load_model("versions", 7)
        assert err.value.code == grpc.StatusCode.NOT_FOUND
        assert "no stored version 7 (stored: 1, 2)" in err.value.details
        (unloaded,) = client.unload_model("versions")
        assert (unloaded.version, unloaded.state, unloaded.stored) == ("2", "UNAVAILABLE", True)
        with pytest.raises(ServiceError) as err:
            client.unload_model("versions")
        assert err.value.code == grpc.StatusCode.NOT_FOUND
        assert [d.version for d in client.delete_model("versions")] == ["1", "2"]
        for bad_name in ("../etc", "a b", "x" * 200):
            with pytest.raises(ServiceError) as err:
                client.upload(tiny_zip, bad_name)
            assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
            assert "is not usable" in err.value.details and len(err.value.details) < 300
        with pytest.raises(ServiceError) as err:
            client.upload(tiny_zip, "ok", version="01")
        assert "is not a positive integer" in err.value.details
    assert repo_contents(server) == []


def test_a_zip_larger_than_one_message_uploads_in_chunks(server: Any, tmp_path: Path) -> None:
    big = padded_zip(tmp_path / "padded.zip", 3 * MESSAGE_LIMIT)
    size = big.stat().st_size
    assert MESSAGE_LIMIT * 2 < size < UPLOAD_LIMIT
    seen: list[tuple[int, int]] = []
    with client_for(server) as client:
        # One message cannot carry it (Triton's load with a file: parameter)...
        from fpga_serve_client.protos import grpc_predict_v2_pb2 as v2
        from fpga_serve_client.protos import grpc_predict_v2_pb2_grpc

        request = v2.RepositoryModelLoadRequest(model_name="padded")
        request.parameters["file:1/model.zip"].bytes_param = big.read_bytes()
        with pytest.raises(grpc.RpcError) as err:
            grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(client._channel).RepositoryModelLoad(
                request, timeout=30, metadata=AUTH
            )
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # ...the chunked upload can.
        service = client.deploy(
            big, "padded", chunk_bytes=MESSAGE_LIMIT // 2, progress=lambda a, b: seen.append((a, b))
        )
        assert len(seen) == -(-size // (MESSAGE_LIMIT // 2)) and seen[-1] == (size, size)
        assert (server.repo / "padded" / "1" / "model.zip").read_bytes() == big.read_bytes()
        out = client.for_model("padded").score_numpy(np.ones((1, 4), np.float32), "x")
        assert out.shape == (1,)
        service.delete()
    assert repo_contents(server) == []


def test_an_upload_over_the_limit_is_refused_before_it_is_stored(
    server: Any, tmp_path: Path
) -> None:
    huge = padded_zip(tmp_path / "huge.zip", UPLOAD_LIMIT + (256 << 10), name="huge")
    with client_for(server) as client, pytest.raises(ServiceError) as err:
        client.upload(huge, "huge", chunk_bytes=MESSAGE_LIMIT // 2)
    assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"over this server's upload limit of {UPLOAD_LIMIT:,}" in err.value.details
    # A header that understates the size is cut off when the bytes pass it.
    data = huge.read_bytes()
    lying = [header(data[:1000], "huge"), pb.UploadModelRequest(chunk=data[:60_000])]
    cut = raw_upload(server, lying)
    assert cut.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "more than the 1,000 bytes its header declared" in (cut.details() or "")
    assert repo_contents(server) == []


def test_a_stream_that_stops_halfway_leaves_nothing(server: Any, tiny_zip: Path) -> None:
    data = tiny_zip.read_bytes()
    short = raw_upload(server, [header(data, "half"), pb.UploadModelRequest(chunk=data[:5000])])
    assert short.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"ended after 5,000 of {len(data):,} bytes" in (short.details() or "")
    # The client goes away mid-stream.
    release = threading.Event()

    def messages() -> Iterator[pb.UploadModelRequest]:
        yield header(data, "gone")
        yield pb.UploadModelRequest(chunk=data[:5000])
        release.wait(30)

    with grpc.insecure_channel(server.address) as channel:
        call = stub(channel).UploadModel.future(messages(), timeout=30, metadata=AUTH)
        wait_until(lambda: any((server.repo / ".staging").glob("upload-*/gone/1/model.zip")))
        call.cancel()
        release.set()
    wait_until(lambda: not any((server.repo / ".staging").glob("upload-*")))
    assert repo_contents(server) == []
    with client_for(server) as client:
        assert client.models() == []  # and the server still answers


def test_a_stream_that_stalls_is_cut_off_at_the_upload_timeout(
    tmp_path: Path, tiny_zip: Path
) -> None:
    """A client that sends half a zip and then nothing, with no deadline of its own."""
    data = tiny_zip.read_bytes()
    repo = tmp_path / "repo"
    repo.mkdir()
    release = threading.Event()

    def stalled() -> Iterator[pb.UploadModelRequest]:
        yield header(data, "stall")
        yield pb.UploadModelRequest(chunk=data[:5000])
        release.wait(60)

    with (
        run_server(
            [], "--model-repository", str(repo), "--upload-timeout-s", "1", "--metrics-port", "-1"
        ) as stalling,
        grpc.insecure_channel(stalling.address) as channel,
    ):
        start = time.monotonic()
        with pytest.raises(grpc.RpcError) as err:
            stub(channel).UploadModel(stalled())
        elapsed = time.monotonic() - start
        release.set()
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "not finished within 1 s (--upload-timeout-s)" in (err.value.details() or "")
        assert 1.0 <= elapsed < 30
        wait_until(lambda: not any((repo / ".staging").glob("upload-*")))
        assert any("not finished within 1 s" in line for line in stalling.log)
        with PredictionClient(stalling.address) as client:  # the name is free again
            assert client.upload(tiny_zip, "stall").version == "1"
    assert sorted(p.name for p in repo.iterdir()) == [".staging", "stall"]


def test_a_checksum_mismatch_is_data_loss(server: Any, tiny_zip: Path) -> None:
    data = tiny_zip.read_bytes()
    wrong = hashlib.sha256(data + b"x").hexdigest()
    err = raw_upload(server, [header(data, "sum", sha256=wrong), pb.UploadModelRequest(chunk=data)])
    assert err.code() == grpc.StatusCode.DATA_LOSS
    assert f"the header says {wrong}" in (err.details() or "")
    for messages, needle in (
        ([pb.UploadModelRequest(chunk=data)], "starts with its header"),
        ([header(data, "sum", sha256="abc")], "not 64 lower-case hex digits"),
        ([header(data, "sum"), header(data, "sum")], "a second header came"),
    ):
        err = raw_upload(server, messages)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and needle in (err.details() or "")
    assert repo_contents(server) == []


def _symlinked(src: Path, dst: Path) -> Path:
    import stat

    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, zin.read(info.filename))
        evil = zipfile.ZipInfo("stages/0/link")
        evil.external_attr = (stat.S_IFLNK | 0o777) << 16
        zout.writestr(evil, "/etc/passwd")
    return dst


HOSTILE = [(case, edit, fix, needle) for case, edit, fix, needle in ARCHIVE_CASES] + [
    (
        "zip slip with fixed hashes",
        lambda m: m.update({"../../evil.sh": b"#!/bin/sh\n"}),
        True,
        "'../../evil.sh' has an unsafe path",
    ),
    (
        "bomb",
        lambda m: m.update({"stages/0/zeros.bin": bytes(30_000_000)}),
        True,
        "ratio limit",
    ),
]


@pytest.mark.parametrize(("case", "edit", "fix", "needle"), HOSTILE, ids=[c[0] for c in HOSTILE])
def test_hostile_zips_are_refused_and_nothing_is_stored_or_loaded(
    server: Any, tiny_zip: Path, tmp_path: Path, case: str, edit: Any, fix: bool, needle: str
) -> None:
    """Stored without loading (Model.register's path): the archive checks alone guard it."""
    bad = rewrite_archive(tiny_zip, tmp_path / "bad.zip", edit, fix)
    with client_for(server) as client:
        with pytest.raises(ServiceError) as err:
            client.upload(bad, "hostile")
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert needle in err.value.details and "nothing was stored" in err.value.details
        assert client.models() == []
    assert repo_contents(server) == []


@pytest.mark.parametrize("how", ["deflate", "crc", "truncated"])
def test_corrupt_zips_are_refused_naming_the_member(
    server: Any, tiny_zip: Path, tmp_path: Path, how: str
) -> None:
    from hostile import corrupt_zip

    bad = corrupt_zip(tiny_zip, tmp_path / "corrupt.zip", "stages/1/model.keras", how)
    with client_for(server) as client, pytest.raises(ServiceError) as err:
        client.upload(bad, "corrupt")
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "'stages/1/model.keras'" in err.value.details
    assert repo_contents(server) == []


def test_links_and_unloadable_zips_are_refused(server: Any, tiny_zip: Path, tmp_path: Path) -> None:
    link = _symlinked(tiny_zip, tmp_path / "link.zip")
    garbage = rewrite_archive(
        tiny_zip,
        tmp_path / "garbage.zip",
        lambda m: m.update({"stages/1/model.keras": b"not a keras file"}),
        fix_hashes=True,
    )
    with client_for(server) as client:
        with pytest.raises(ServiceError) as err:
            client.deploy(link, "hostile")
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "'stages/0/link' is not a regular file" in err.value.details
        # A valid archive whose stage cannot load: refused at load, so not stored either.
        with pytest.raises(ServiceError) as err:
            client.deploy(garbage, "hostile")
        assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert "did not load, so nothing was stored" in err.value.details
        assert "model.keras" in err.value.details
        assert client.models() == []
    assert repo_contents(server) == []


def inflight(server: Any, model: str) -> float:
    """The server's fpga_serve_inflight_requests for ``model`` (from /metrics)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    request = urllib.request.Request(
        f"http://127.0.0.1:{server.metrics_port}/metrics", headers=dict(AUTH)
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        text = reply.read().decode()
    for family in text_string_to_metric_families(text):
        if family.name == "fpga_serve_inflight_requests":
            return sum(s.value for s in family.samples if s.labels.get("model") == model)
    return 0.0


def test_two_uploads_of_one_name_at_once(server: Any, tiny_zip: Path) -> None:
    data = tiny_zip.read_bytes()
    release = threading.Event()

    def slow() -> Iterator[pb.UploadModelRequest]:
        yield header(data, "race")
        yield pb.UploadModelRequest(chunk=data[:4000])
        release.wait(30)
        yield pb.UploadModelRequest(chunk=data[4000:])

    with grpc.insecure_channel(server.address) as channel:
        first = stub(channel).UploadModel.future(slow(), timeout=60, metadata=AUTH)
        wait_until(lambda: any((server.repo / ".staging").glob("upload-*/race/1/model.zip")))
        with client_for(server) as client:
            for attempt in (
                lambda: client.upload(tiny_zip, "race"),
                lambda: client.delete_model("race"),
            ):
                with pytest.raises(ServiceError) as err:
                    attempt()
                assert err.value.code == grpc.StatusCode.ABORTED
                assert "is being changed by another request" in err.value.details
            release.set()
            assert first.result().model.version == "1"
            assert [d.version for d in client.delete_model("race")] == ["1"]
    assert repo_contents(server) == []


def test_keys_guard_the_lifecycle(server: Any, tiny_zip: Path) -> None:
    for key in (None, "wrong-key"):
        with client_for(server, key) as client:
            for action in (
                lambda: client.upload(tiny_zip, "nokey"),
                client.models,
                lambda: client.delete_model("nokey"),
            ):
                with pytest.raises(ServiceError) as err:
                    action()
                assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert repo_contents(server) == []


def test_deleting_a_model_in_use_lets_its_requests_finish(server: Any, tmp_path: Path) -> None:
    slow_zip = tmp_path / "slow.zip"
    build_slow_model_def(seconds_of_work=120, name="busy").save(slow_zip)  # type: ignore[attr-defined]
    outcome: dict[str, Any] = {}
    with client_for(server) as client:
        client.deploy(slow_zip, "busy")
        busy = client.for_model("busy")
        busy.numpy_timeout = 120

        def call() -> None:
            try:
                outcome["result"] = busy.score_numpy(np.ones((1, 4), np.float32), "x")
            except ServiceError as exc:
                outcome["error"] = exc
            outcome["finished"] = time.monotonic()

        worker = threading.Thread(target=call)
        worker.start()
        wait_until(lambda: inflight(server, "busy") == 1)
        deleted = client.delete_model("busy")
        returned = time.monotonic()
        worker.join(120)
        assert [d.state for d in deleted] == ["READY"]
        assert "error" not in outcome, outcome.get("error")
        np.testing.assert_array_equal(outcome["result"], [2.0, 2.0, 2.0, 2.0])
        assert outcome["finished"] <= returned  # the delete waited for it
        with pytest.raises(ServiceError) as err:
            busy.score_numpy(np.ones((1, 4), np.float32), "x")
        assert err.value.code == grpc.StatusCode.NOT_FOUND
    assert repo_contents(server) == []


def test_deploy_run_delete_cycles_under_load_from_a_second_client(
    server: Any, tiny_zip: Path, small_jpeg: bytes
) -> None:
    """Client A scores a steady model throughout (bounded: 20 s at most); client B deploys,
    runs and deletes another model three times. Nothing A sends fails."""
    stop = threading.Event()
    results = {"ok": 0, "failed": []}  # type: dict[str, Any]
    with client_for(server) as admin:
        admin.deploy(tiny_zip, "steady")
        want = scores_in_process(tiny_zip, small_jpeg)

        def load() -> None:
            with client_for(server).for_model("steady") as steady:
                deadline = time.monotonic() + 20
                while not stop.is_set() and time.monotonic() < deadline:
                    try:
                        scores = steady.score_image(small_jpeg)
                        np.testing.assert_allclose(scores, want, rtol=1e-5)
                        results["ok"] += 1
                    except (ServiceError, AssertionError) as exc:
                        results["failed"].append(exc)

        worker = threading.Thread(target=load)
        worker.start()
        try:
            with client_for(server) as second:
                for cycle in range(3):
                    service = second.deploy(tiny_zip, "cycler")
                    assert service.version == "1", cycle
                    scores = service.run(small_jpeg)
                    np.testing.assert_allclose(scores, want, rtol=1e-5)
                    service.delete()
        finally:
            stop.set()
            worker.join(30)
        assert results["failed"] == [] and results["ok"] > 0
        admin.delete_model("steady")
    assert repo_contents(server) == []


def test_without_a_repository_the_lifecycle_says_so(tiny_server: Any, tiny_zip: Path) -> None:
    with PredictionClient(tiny_server.address) as client:
        with pytest.raises(ServiceError) as err:
            client.upload(tiny_zip, "nowhere")
        assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert "no model repository" in err.value.details
        assert [(m.name, m.state, m.stored) for m in client.models()] == [("tiny", "READY", False)]


def test_tritonclient_deploys_with_files_and_loads_from_disk(
    server: Any, tiny_zip: Path, small_jpeg: bytes, tmp_path: Path
) -> None:
    disk = server.repo / "ondisk" / "1"
    disk.mkdir(parents=True)
    (disk / "m.zip").write_bytes(tiny_zip.read_bytes())  # copied by hand, as before
    image = tmp_path / "small.jpg"
    image.write_bytes(small_jpeg)
    got = external_tools.triton_probe(
        "triton_deploy_probe.py", server.address, str(tiny_zip), str(image), "ondisk", KEY
    )
    assert got["ready"] and got["disk_ready"] and not got["after_unload"]
    np.testing.assert_allclose(got["scores"][0], scores_in_process(tiny_zip, small_jpeg), rtol=1e-5)
    assert "version 1 is already stored" in got["again"]
    assert "the uploaded zip is refused" in got["junk"]
    assert ["uploaded", "1", "READY"] in got["index"] and ["ondisk", "1", "READY"] in got["index"]
    with client_for(server) as client:
        assert [d.name for d in client.delete_model("uploaded")] == ["uploaded"]
        assert [d.name for d in client.delete_model("ondisk")] == ["ondisk"]
    assert repo_contents(server) == []


def test_cli_deploy_models_delete_over_tls(
    tmp_path: Path, tiny_zip: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same keys and TLS as inference; progress on stderr."""
    from fpga_serve_client.cli import main
    from tls import make_cert

    cert, key = make_cert(tmp_path)
    repo = tmp_path / "repo"
    repo.mkdir()
    with run_server(
        [],
        "--model-repository",
        str(repo),
        "--tls-cert",
        str(cert),
        "--tls-key",
        str(key),
        env={"FPGA_SERVE_API_KEYS": json.dumps([KEY])},
    ) as tls_server:
        conn = ["--address", f"localhost:{tls_server.grpc_port}", "--ca-cert", str(cert)]
        assert main(["deploy", str(tiny_zip), "--name", "cli", *conn, "--token", KEY]) == 0
        out, err = capsys.readouterr()
        assert out.strip() == "cli version 1: READY"
        assert "uploading tiny.zip: 100%" in err
        assert main(["models", *conn, "--token", KEY]) == 0
        lines = capsys.readouterr().out.strip().splitlines()
        assert lines[0].split()[:4] == ["model", "version", "state", "stored"]
        assert lines[1].split()[:3] == ["cli", "1", "READY"]
        assert main(["deploy", str(tiny_zip), "--name", "cli", *conn, "--token", "bad"]) == 1
        assert "UNAUTHENTICATED" in capsys.readouterr().err
        assert main(["delete", "cli", "--version", "1", *conn, "--token", KEY]) == 0
        assert capsys.readouterr().out.strip() == "deleted cli version 1"
        assert main(["delete", "cli", *conn, "--token", KEY]) == 1
        assert "NOT_FOUND" in capsys.readouterr().err
    assert [p.name for p in repo.iterdir() if p.name != ".staging"] == []
