"""A minimal raw grpcio PredictionService doing the same work as fpga-serve's trivial model:
the baseline for bench_serving.py.

    python bench/raw_server.py MODEL.zip PORT [WORKERS]

Per request, in the RPC thread: the input tensor ``images`` to numpy with the same converter
fpga-serve uses (fpga_serve_client.convert.from_tensor_proto), the zip's stages run in order (the
same stage runners fpga-serve loads), the one output back with to_tensor_proto under
``output_alias``. Nothing else: no model lookup, validation, image-header guard, metrics,
batching queue, deadline or cancellation checks. WORKERS (default 8) sizes the gRPC thread pool;
bench_serving.py gives both servers the same pool size.
"""

from __future__ import annotations

import sys
from concurrent import futures
from pathlib import Path

import grpc
from fpga_serve.modelzip import LoadContext, load_pipeline
from fpga_serve_client.convert import from_tensor_proto, to_tensor_proto
from fpga_serve_client.protos import predict_pb2, prediction_service_pb2_grpc


class Raw(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, stages: list) -> None:  # type: ignore[type-arg]
        self.stages = stages

    def Predict(self, request, context):  # type: ignore[no-untyped-def]
        arrays = [from_tensor_proto(request.inputs["images"])]
        for stage in self.stages:
            arrays = stage.run(arrays)
        response = predict_pb2.PredictResponse()
        response.outputs["output_alias"].CopyFrom(to_tensor_proto(arrays[0]))
        return response


def main() -> None:
    archive = load_pipeline(Path(sys.argv[1]), LoadContext())
    workers = int(sys.argv[3]) if len(sys.argv) > 3 else 8
    server = grpc.server(
        futures.ThreadPoolExecutor(workers),
        options=[
            ("grpc.max_receive_message_length", 64 << 20),
            ("grpc.max_send_message_length", 64 << 20),
        ],
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Raw(archive.stages), server)
    server.add_insecure_port(f"127.0.0.1:{sys.argv[2]}")
    server.start()
    print("ready", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
