"""The data plane: loaded models, inference, readiness and metrics. Knows no wire protocol."""

from fpga_serve.service.dataplane import (
    DataPlane,
    EncodedTensor,
    InferenceRequest,
    InferenceResponse,
)
from fpga_serve.service.metrics import Metrics
from fpga_serve.service.models import ModelRegistry, ServedModel

__all__ = [
    "DataPlane",
    "EncodedTensor",
    "InferenceRequest",
    "InferenceResponse",
    "Metrics",
    "ModelRegistry",
    "ServedModel",
]
