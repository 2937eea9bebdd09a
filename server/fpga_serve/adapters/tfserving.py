"""tensorflow.serving.PredictionService: Predict and GetModelMetadata (Brainwave clients).

Thin: each RPC converts (``convert/tfserving.py``), calls the data plane, converts back; errors
and request metrics are the interceptor's (``calls.py``)."""

from __future__ import annotations

import grpc
from fpga_serve_client.protos import (
    get_model_metadata_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from fpga_serve.adapters.calls import Runner
from fpga_serve.adapters.convert import tfserving as convert
from fpga_serve.service.dataplane import DataPlane


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, plane: DataPlane, runner: Runner) -> None:
        self.plane = plane
        self.runner = runner

    async def Predict(  # type: ignore[override]
        self, request: predict_pb2.PredictRequest, context: grpc.aio.ServicerContext
    ) -> predict_pb2.PredictResponse:
        def predict() -> predict_pb2.PredictResponse:
            result = self.plane.infer(convert.predict_request(request, context))
            return convert.predict_response(result, request)

        return await self.runner.run(predict, *convert.requested(request.model_spec))

    def GetModelMetadata(
        self, request: get_model_metadata_pb2.GetModelMetadataRequest, context: grpc.ServicerContext
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        meta = self.plane.metadata(*convert.requested(request.model_spec))
        return convert.metadata_response(meta, request)
