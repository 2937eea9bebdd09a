"""Production behaviour end to end, the server in its own process on loopback: TLS and keys,
model lifecycle under traffic, deadlines, bounded queues, graceful shutdown."""

from __future__ import annotations

import os
import shutil
import signal
import ssl
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from conftest import build_slow_model_def, build_tiny_model_def
from fpga_serve_client import PredictionClient, ServiceError
from fpga_serve_client.protos import (
    grpc_predict_v2_pb2 as v2,
)
from fpga_serve_client.protos import (
    grpc_predict_v2_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    tf_tensor_pb2,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hostile import HOLD_INLINE_MAX_US, build_hold_model_def, hold_request, save
from serving import run_server, wait_for_metric
from tls import make_cert, make_client_ca
from waiting import wait_until


def test_mutual_tls_requires_a_client_certificate(
    tmp_path: Path, tiny_zip: Path, china_jpg: bytes
) -> None:
    cert, key = make_cert(tmp_path)
    client_ca, client_key, client_cert = make_client_ca(tmp_path)
    with run_server(
        [tiny_zip],
        "--tls-cert",
        str(cert),
        "--tls-key",
        str(key),
        "--tls-client-ca",
        str(client_ca),
    ) as server:
        roots = cert.read_bytes()
        with PredictionClient(
            "localhost",
            server.grpc_port,
            use_ssl=True,
            retries=0,
            root_certificates=roots,
            private_key=client_key.read_bytes(),
            certificate_chain=client_cert.read_bytes(),
        ) as c:
            assert c.score_image(china_jpg).shape == (5,)
        with (
            PredictionClient(
                "localhost",
                server.grpc_port,
                use_ssl=True,
                retries=0,
                root_certificates=roots,
                timeout=5,
            ) as c,
            pytest.raises(ServiceError) as err,
        ):
            c.score_image(china_jpg)
        assert err.value.code == grpc.StatusCode.UNAVAILABLE


def float_request(values: list[float], model: str = "") -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    if model:
        request.model_spec.name = model
    t = request.inputs["x"]
    t.dtype = tf_tensor_pb2.DT_FLOAT
    t.tensor_shape.dim.add(size=len(values) // 4)
    t.tensor_shape.dim.add(size=4)
    t.float_val.extend(values)
    return request


@pytest.fixture(scope="module")
def slow_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("slow") / "slow.zip"
    build_slow_model_def().save(path)  # type: ignore[attr-defined]
    return path


def test_tls_and_rotating_keys(tmp_path: Path, tiny_zip: Path, china_jpg: bytes) -> None:
    cert, key = make_cert(tmp_path)
    keys = tmp_path / "keys"
    keys.write_text("primary-7f3a\nsecondary-91bc\n")
    with run_server(
        [tiny_zip], "--tls-cert", str(cert), "--tls-key", str(key), "--api-keys-file", str(keys)
    ) as server:
        roots = cert.read_bytes()

        def client(token: str | None) -> PredictionClient:
            return PredictionClient(
                "localhost",
                server.grpc_port,
                use_ssl=True,
                access_token=token,
                root_certificates=roots,
                retries=0,
            )

        with client("primary-7f3a") as c:
            assert c.score_image(china_jpg).shape == (5,)
        with client("secondary-91bc") as c:
            assert c.score_image(china_jpg).shape == (5,)
        for bad in (None, "wrong-key"):
            with client(bad) as c, pytest.raises(ServiceError) as err:
                c.score_image(china_jpg)
            assert err.value.code == grpc.StatusCode.UNAUTHENTICATED

        # Orchestrator probes need no key.
        creds = grpc.ssl_channel_credentials(roots)
        with grpc.secure_channel(f"localhost:{server.grpc_port}", creds) as ch:
            status = (
                health_pb2_grpc.HealthStub(ch)
                .Check(health_pb2.HealthCheckRequest(), timeout=10)
                .status
            )
            assert status == health_pb2.HealthCheckResponse.SERVING

        # Plaintext to the TLS port fails; it does not reach the model.
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as ch:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
            with pytest.raises(grpc.RpcError) as rpc_err:
                stub.Predict(predict_pb2.PredictRequest(), timeout=5)
            assert rpc_err.value.code() == grpc.StatusCode.UNAVAILABLE

        # Rotation: a new primary works at once, the dropped key stops working. (The server
        # sees a change by the file's mtime and size: the mtime is moved on explicitly, as a
        # coarse file-system clock might not.)
        before = keys.stat()
        keys.write_text("new-primary-55de\nprimary-7f3a\n")
        os.utime(keys, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
        with client("new-primary-55de") as c:
            assert c.score_image(china_jpg).shape == (5,)
        with client("secondary-91bc") as c, pytest.raises(ServiceError):
            c.score_image(china_jpg)

        # /metrics behind the same keys and TLS.
        ctx = ssl.create_default_context(cadata=cert.read_text())
        url = f"https://localhost:{server.metrics_port}/metrics"
        with pytest.raises(urllib.error.HTTPError) as http_err:
            urllib.request.urlopen(url, context=ctx, timeout=10)
        assert http_err.value.code == 401
        req = urllib.request.Request(url, headers={"Authorization": "Bearer new-primary-55de"})
        body = urllib.request.urlopen(req, context=ctx, timeout=10).read().decode()
        assert "fpga_serve_requests_total" in body
    log = "".join(server.log)
    for secret in ("primary-7f3a", "secondary-91bc", "new-primary-55de"):
        assert secret not in log


def _index(stub: Any) -> dict[tuple[str, str], tuple[str, str]]:
    reply = stub.RepositoryIndex(v2.RepositoryIndexRequest(), timeout=10)
    return {(m.name, m.version): (m.state, m.reason) for m in reply.models}


def test_repository_lifecycle_swap_under_traffic(tmp_path: Path, china_jpg: bytes) -> None:
    repo = tmp_path / "repo"
    (repo / "tiny" / "1").mkdir(parents=True)
    first = repo / "tiny" / "1" / "model.zip"
    build_tiny_model_def("tiny").save(first)  # type: ignore[attr-defined]
    # Junk beside it: reported, never loaded, does not stop the valid model.
    (repo / "README.txt").write_text("not a model")
    (repo / "broken" / "1").mkdir(parents=True)
    (repo / "broken" / "1" / "model.zip").write_bytes(b"PK\x03\x04 truncated")
    (repo / "tiny" / "latest").mkdir()

    with (
        run_server([], "--model-repository", str(repo)) as server,
        grpc.insecure_channel(server.address) as ch,
    ):
        stub = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(ch)
        index = _index(stub)
        assert index[("tiny", "1")][0] == "READY"
        assert index[("broken", "1")][0] == "UNAVAILABLE" and "zip" in index[("broken", "1")][1]
        assert index[("README.txt", "")][0] == "UNAVAILABLE"
        assert index[("tiny", "latest")][0] == "UNAVAILABLE"

        with PredictionClient(server.address, model_name="tiny", retries=0) as c:
            before = c.score_image(china_jpg)

        # Replace version 1 with a differently initialised model while requests flow.
        staged = tmp_path / "v1b.zip"
        model_def = build_tiny_model_def("tiny")
        import keras

        stage = model_def.pipeline[1]  # type: ignore[attr-defined]
        keras_model = stage.model
        keras_model.set_weights([w * 1.7 + 0.05 for w in keras_model.get_weights()])
        model_def.save(staged)  # type: ignore[attr-defined]
        del keras

        failures: list[str] = []
        results: list[np.ndarray] = []
        stop = threading.Event()

        def traffic() -> None:
            with PredictionClient(server.address, model_name="tiny", retries=0) as c:
                deadline = time.monotonic() + 60
                while not stop.is_set() and time.monotonic() < deadline and len(results) < 2000:
                    try:
                        results.append(c.score_image(china_jpg))
                    except ServiceError as exc:
                        failures.append(f"{exc.code}: {exc}")

        threads = [threading.Thread(target=traffic) for _ in range(3)]
        for t in threads:
            t.start()
        wait_until(lambda: len(results) >= 3 or failures)  # traffic flows before the swap
        shutil.copyfile(staged, first)
        stub.RepositoryModelLoad(v2.RepositoryModelLoadRequest(model_name="tiny"), timeout=120)
        swapped = len(results)
        wait_until(lambda: len(results) >= swapped + 3 or failures)  # and after it
        stop.set()
        for t in threads:
            t.join(90)
        assert failures == []
        with PredictionClient(server.address, model_name="tiny", retries=0) as c:
            after = c.score_image(china_jpg)
        assert not np.allclose(before, after)
        assert any(np.allclose(r, before) for r in results)
        assert any(np.allclose(r, after) for r in results)

        # A swap to a broken zip is refused; the loaded version keeps serving.
        first.write_bytes(b"garbage")
        with pytest.raises(grpc.RpcError) as err:
            stub.RepositoryModelLoad(v2.RepositoryModelLoadRequest(model_name="tiny"), timeout=60)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "version 1" in err.value.details()
        with PredictionClient(server.address, model_name="tiny", retries=0) as c:
            np.testing.assert_allclose(c.score_image(china_jpg), after, rtol=1e-6)

        # Unload: gone from inference and health.
        stub.RepositoryModelUnload(v2.RepositoryModelUnloadRequest(model_name="tiny"), timeout=60)
        assert not stub.ModelReady(v2.ModelReadyRequest(name="tiny")).ready
        assert not stub.ServerReady(v2.ServerReadyRequest()).ready
        health = health_pb2_grpc.HealthStub(ch)
        status = health.Check(health_pb2.HealthCheckRequest(service="tiny")).status
        assert status == health_pb2.HealthCheckResponse.NOT_SERVING
        with (
            PredictionClient(server.address, model_name="tiny", retries=0) as c,
            pytest.raises(ServiceError) as s_err,
        ):
            c.score_image(china_jpg)
        assert s_err.value.code == grpc.StatusCode.NOT_FOUND


def test_deadlines_queue_bound_and_graceful_shutdown(slow_zip: Path, tmp_path: Path) -> None:
    hold_zip = save(build_hold_model_def("hold"), tmp_path / "hold.zip")
    with (
        run_server(
            [slow_zip, hold_zip],
            *("--max-queue-size", "2", "--batch-max-size", "4", "--workers", "16"),
            *("--inline-max-us", str(HOLD_INLINE_MAX_US)),
        ) as server,
        grpc.insecure_channel(server.address) as ch,
    ):
        stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
        start = time.monotonic()
        stub.Predict(float_request([1, 2, 3, 4], "slow"), timeout=60)
        one = time.monotonic() - start
        assert one > 0.05, f"the slow model is too fast ({one:.3f} s) for this test"

        # Flood: at most one running + two queued; the rest are refused at once.
        with ThreadPoolExecutor(12) as pool:
            futures = [
                pool.submit(stub.Predict, float_request([i] * 4, "slow"), timeout=60)
                for i in range(12)
            ]
            codes = []
            for f in futures:
                try:
                    f.result()
                    codes.append("OK")
                except grpc.RpcError as exc:
                    codes.append(exc.code().name)
        assert "RESOURCE_EXHAUSTED" in codes and "OK" in codes, codes
        assert set(codes) <= {"OK", "RESOURCE_EXHAUSTED"}

        # A request whose deadline passes while queued is dropped before it runs: it waits
        # behind a 5 s batch with a 2 s deadline (ample to reach the queue on a loaded machine).
        busy = stub.Predict.future(hold_request(5.0), timeout=60)
        wait_for_metric(server, "fpga_serve_inflight_requests", lambda v: v >= 1, model="hold")
        with pytest.raises(grpc.RpcError) as err:
            stub.Predict(hold_request(0.0), timeout=2.0)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        busy.result()
        # The queued request is dropped when it leaves the queue, after the busy batch.
        wait_for_metric(
            server, "fpga_serve_dropped_requests_total", lambda v: v >= 1, reason="deadline"
        )

        # SIGTERM with work in flight: accepted requests finish, then exit 0 (checked on exit).
        inflight = [
            stub.Predict.future(float_request([3] * 4, "slow"), timeout=60) for _ in range(2)
        ]
        wait_for_metric(server, "fpga_serve_inflight_requests", lambda v: v >= 2)  # accepted
        server.process.send_signal(signal.SIGTERM)
        for f in inflight:
            assert f.result().outputs["y"].float_val or f.result().outputs["y"].tensor_content
        assert server.process.wait(timeout=60) == 0
