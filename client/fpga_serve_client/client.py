"""PredictionClient: score images and arrays on an fpga-serve (or any TF Serving / KServe v2)
endpoint, as the Brainwave clients did."""

from __future__ import annotations

import copy
import os
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import grpc
import numpy as np

from fpga_serve_client import anytensor
from fpga_serve_client.convert import (
    from_infer_output,
    from_tensor_proto,
    to_infer_input,
    to_tensor_proto,
)
from fpga_serve_client.errors import ServiceError, TensorConversionError
from fpga_serve_client.management import ManagementMixin
from fpga_serve_client.protos import (
    get_model_metadata_pb2,
    grpc_predict_v2_pb2,
    grpc_predict_v2_pb2_grpc,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

T = TypeVar("T")

RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})
"""Only these are retried; INVALID_ARGUMENT, NOT_FOUND, UNAUTHENTICATED... never are."""

LOCAL_LIMITS = ("metadata size exceeds", "message larger than max")
"""How gRPC words a RESOURCE_EXHAUSTED raised by this side's own limits (metadata over
``grpc.max_metadata_size``, a message over the send/receive maximum): the same call would
fail the same way, so it is never retried."""


def retryable(code: grpc.StatusCode, details: str) -> bool:
    """UNAVAILABLE, and RESOURCE_EXHAUSTED from the server (overloaded, queue full) only."""
    if code not in RETRYABLE:
        return False
    lowered = details.lower()
    return not (
        code is grpc.StatusCode.RESOURCE_EXHAUSTED and any(s in lowered for s in LOCAL_LIMITS)
    )


OUTPUT_ALIAS = "output_alias"

TOKEN_ENV = "FPGA_SERVE_TOKEN"
"""Where the CLI (and the Brainwave layer's workspace) take the API key from when none is given."""


def token_from_environment() -> str | None:
    """The API key in ``FPGA_SERVE_TOKEN``, or None."""
    return os.environ.get(TOKEN_ENV) or None


def make_channel(
    target: str,
    *,
    use_ssl: bool = False,
    root_certificates: bytes | None = None,
    private_key: bytes | None = None,
    certificate_chain: bytes | None = None,
    server_name: str | None = None,
    max_message_bytes: int = 64 * 1024 * 1024,
) -> grpc.Channel:
    """A channel to ``target`` (host:port): plaintext, TLS, or mutual TLS with a client
    certificate (``private_key`` + ``certificate_chain``, PEM)."""
    options: list[tuple[str, Any]] = [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
    ]
    if not use_ssl:
        return grpc.insecure_channel(target, options=options)
    if (private_key is None) != (certificate_chain is None):
        raise ValueError("a client certificate needs both its private key and its chain")
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    creds = grpc.ssl_channel_credentials(
        root_certificates=root_certificates,
        private_key=private_key,
        certificate_chain=certificate_chain,
    )
    return grpc.secure_channel(target, creds, options=options)


class PredictionClient(ManagementMixin):
    """A client for one model on one server, and for the server's model lifecycle
    (``deploy``, ``upload``, ``models``, ``load_model``, ``unload_model``, ``delete_model``:
    ``management.py``).

    ``address`` is a host name (with ``port``) or ``host:port``. ``access_token`` is sent as
    ``authorization: Bearer <token>``; ``private_key``/``certificate_chain`` (PEM) present a
    client certificate to servers that require mutual TLS; ``server_name`` is the name checked
    against the server's certificate when it differs from ``address``. Image calls time out after
    ``timeout`` seconds, numpy calls after ``numpy_timeout``; UNAVAILABLE and
    RESOURCE_EXHAUSTED are retried ``retries`` times with doubling back-off (plus jitter),
    except a RESOURCE_EXHAUSTED from the client's own metadata or message-size limits.
    """

    def __init__(
        self,
        address: str,
        port: int = 8500,
        use_ssl: bool = False,
        access_token: str | None = None,
        *,
        model_name: str = "",
        input_name: str = "images",
        output_name: str | None = None,
        timeout: float = 10.0,
        numpy_timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.1,
        root_certificates: bytes | None = None,
        private_key: bytes | None = None,
        certificate_chain: bytes | None = None,
        protocol: Literal["tfserving", "v2"] = "tfserving",
        max_message_bytes: int = 64 * 1024 * 1024,
        server_name: str | None = None,
    ) -> None:
        target = address if ":" in address.rsplit("]", 1)[-1] else f"{address}:{port}"
        self._channel = make_channel(
            target,
            use_ssl=use_ssl,
            root_certificates=root_certificates,
            private_key=private_key,
            certificate_chain=certificate_chain,
            server_name=server_name,
            max_message_bytes=max_message_bytes,
        )
        self._predict = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._v2 = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)
        self._metadata = (("authorization", f"Bearer {access_token}"),) if access_token else ()
        self.target = target
        self.model_name = model_name
        self.input_name = input_name
        self.output_name = output_name
        self.timeout = timeout
        self.numpy_timeout = numpy_timeout
        self.retries = retries
        self.backoff = backoff
        self.protocol = protocol
        self._labels: list[str] | None = None
        self._labels_fetched = False

    # Scoring -------------------------------------------------------------------------------

    def score_image(self, data: bytes) -> np.ndarray:
        """Confidences for one encoded image (JPEG, PNG, ...), batch dimension stripped."""
        return np.asarray(self.score_images([data])[0])

    def score_images(self, images: Sequence[bytes]) -> np.ndarray:
        """Confidences [N, classes] for N encoded images."""
        batch = np.empty(len(images), dtype=object)
        batch[:] = [bytes(b) for b in images]
        return self._infer(batch, self.input_name, self.timeout)

    def score_file(self, path: str | Path) -> np.ndarray:
        """Confidences for an image file."""
        return self.score_image(Path(path).read_bytes())

    def score_numpy(self, array: Any, input_name: str | None = None) -> np.ndarray:
        """Send ``array`` as given; the result's batch dimension is stripped when it is 1."""
        result = self._infer(np.asarray(array), input_name or self.input_name, self.numpy_timeout)
        return result[0] if result.ndim > 0 and result.shape[0] == 1 else result

    def top_k(self, scores: np.ndarray, k: int = 5) -> list[tuple[str, float]]:
        """The k best (label, confidence) pairs; labels from the model, else ``class <i>``."""
        flat = np.asarray(scores).reshape(-1)
        order = np.argsort(-flat, kind="stable")[:k]
        labels = self.labels()
        return [
            (labels[i] if labels is not None and i < len(labels) else f"class {i}", float(flat[i]))
            for i in order
        ]

    def labels(self) -> list[str] | None:
        """The model's class names (fetched once with GetModelMetadata), or None."""
        if not self._labels_fetched:
            request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["labels"])
            if self.model_name:
                request.model_spec.name = self.model_name
            response = self._call(self._predict.GetModelMetadata, request, self.timeout)
            if "labels" in response.metadata:
                tensor = anytensor.unpack(response.metadata["labels"])
                self._labels = [s.decode("utf-8", "replace") for s in tensor.string_val]
            self._labels_fetched = True
        return self._labels

    # Plumbing ------------------------------------------------------------------------------

    def _infer(self, array: np.ndarray, input_name: str, timeout: float) -> np.ndarray:
        if self.protocol == "v2":
            return self._infer_v2(array, input_name, timeout)
        request = predict_pb2.PredictRequest()
        if self.model_name:
            request.model_spec.name = self.model_name
        request.inputs[input_name].CopyFrom(to_tensor_proto(array, input_name))
        if self.output_name:
            request.output_filter.append(self.output_name)
        response = self._call(self._predict.Predict, request, timeout)
        outputs = response.outputs
        if self.output_name:
            key = self.output_name
        elif OUTPUT_ALIAS in outputs:
            key = OUTPUT_ALIAS
        elif len(outputs) == 1:
            (key,) = outputs.keys()
        else:
            raise TensorConversionError(
                f"the response has outputs {sorted(outputs)}; say which with output_name"
            )
        if key not in outputs:
            raise TensorConversionError(f"the response has no output {key!r}")
        return from_tensor_proto(outputs[key], key)

    def _infer_v2(self, array: np.ndarray, input_name: str, timeout: float) -> np.ndarray:
        request = grpc_predict_v2_pb2.ModelInferRequest(model_name=self.model_name)
        tensor, raw = to_infer_input(input_name, array, raw=True)
        request.inputs.append(tensor)
        request.raw_input_contents.append(raw or b"")
        if self.output_name:
            request.outputs.add(name=self.output_name)
        response = self._call(self._v2.ModelInfer, request, timeout)
        if not response.outputs:
            raise TensorConversionError("the response has no outputs")
        index = 0
        if self.output_name:
            names = [o.name for o in response.outputs]
            index = names.index(self.output_name) if self.output_name in names else 0
        raw_out = response.raw_output_contents[index] if response.raw_output_contents else None
        return from_infer_output(response.outputs[index], raw_out)

    def _call(self, method: Callable[..., T], request: Any, timeout: float) -> T:
        attempt = 0
        while True:
            try:
                return method(request, timeout=timeout, metadata=self._metadata)
            except grpc.RpcError as exc:
                code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
                details = exc.details() if hasattr(exc, "details") else str(exc)
                if not retryable(code, details or "") or attempt >= self.retries:
                    raise ServiceError(code, details or "") from None
                delay = self.backoff * (2**attempt)
                time.sleep(delay + random.uniform(0, delay / 2))
                attempt += 1

    def for_model(self, model_name: str) -> PredictionClient:
        """A client for another model on the same connection (closing either closes both)."""
        other = copy.copy(self)
        other.model_name = model_name
        other._labels, other._labels_fetched = None, False
        return other

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> PredictionClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
