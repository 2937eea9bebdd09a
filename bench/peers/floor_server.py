"""The floor: a minimal grpcio KServe v2 server that shares nothing with fpga-serve.

    python floor_server.py STUBS_DIR PORT sync|aio [WORKERS]

Per ModelInfer: ``np.frombuffer`` on ``raw_input_contents[0]``, the trivial model (a fixed vector
plus the mean, trivial.py), one raw output. Nothing else: no model lookup, no validation of
names, dtypes or sizes, no metrics, no deadline or cancellation checks, no typed contents. Its
stubs are generated in its own venv from the project's .proto (wire-compatible KServe v2);
fpga-serve's converters and stage runners are not imported. ``sync`` serves from a thread pool
(grpc.server, as fpga-serve does); ``aio`` from grpc.aio's event loop (as KServe does).
"""

from __future__ import annotations

import asyncio
import sys
from concurrent import futures
from pathlib import Path
from typing import Any

sys.path.insert(0, sys.argv[1])
sys.path.insert(1, str(Path(__file__).resolve().parent))

import grpc
import numpy as np
from fpga_serve_client.protos import grpc_predict_v2_pb2 as pb  # the stubs' copy, not the client's
from fpga_serve_client.protos import grpc_predict_v2_pb2_grpc as pb_grpc
from trivial import OUTPUT, expected


def infer(request: Any) -> Any:
    tensor = request.inputs[0]
    x = np.frombuffer(request.raw_input_contents[0], dtype=np.uint8).reshape(tuple(tensor.shape))
    y = expected(x)
    out = pb.ModelInferResponse.InferOutputTensor(name=OUTPUT, datatype="FP32", shape=y.shape)
    return pb.ModelInferResponse(
        model_name=request.model_name,
        id=request.id,
        outputs=[out],
        raw_output_contents=[y.tobytes()],
    )


class Sync(pb_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    def ModelInfer(self, request: Any, context: Any) -> Any:
        return infer(request)

    def ModelReady(self, request: Any, context: Any) -> Any:
        return pb.ModelReadyResponse(ready=True)


class Aio(pb_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    async def ModelInfer(self, request: Any, context: Any) -> Any:
        return infer(request)

    async def ModelReady(self, request: Any, context: Any) -> Any:
        return pb.ModelReadyResponse(ready=True)


async def serve_aio(address: str) -> None:
    server = grpc.aio.server()
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(Aio(), server)
    server.add_insecure_port(address)
    await server.start()
    await server.wait_for_termination()


def main() -> None:
    address = f"127.0.0.1:{sys.argv[2]}"
    if sys.argv[3] == "aio":
        asyncio.run(serve_aio(address))
        return
    workers = int(sys.argv[4]) if len(sys.argv) > 4 else 8
    server = grpc.server(futures.ThreadPoolExecutor(workers))
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(Sync(), server)
    server.add_insecure_port(address)
    server.start()
    server.wait_for_termination()


if __name__ == "__main__":
    main()
