"""fpga-serve's thin client: grpcio, protobuf and numpy only."""

from fpga_serve_client.client import PredictionClient, token_from_environment
from fpga_serve_client.convert import (
    from_infer_input,
    from_infer_output,
    from_tensor_proto,
    to_infer_input,
    to_infer_output,
    to_tensor_proto,
)
from fpga_serve_client.errors import ServiceError, TensorConversionError
from fpga_serve_client.management import DeployedModel, ModelStatus

__all__ = [
    "DeployedModel",
    "ModelStatus",
    "PredictionClient",
    "ServiceError",
    "TensorConversionError",
    "from_infer_input",
    "from_infer_output",
    "from_tensor_proto",
    "to_infer_input",
    "to_infer_output",
    "to_tensor_proto",
    "token_from_environment",
]
__version__ = "0.1.0"
