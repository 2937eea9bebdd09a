"""KServe's own ModelServer (the ``kserve`` package, in its own venv) serving the trivial model.

    python kserve_server.py GRPC_PORT HTTP_PORT

A ``kserve.Model`` whose ``predict`` takes the v2 InferRequest (KServe decodes
``raw_input_contents`` with ``np.frombuffer``) and returns one FP32 InferOutput, as KServe's
docs write a custom predictor. KServe as users run it (its gRPC server, its REST server beside
it, its Prometheus histograms per request), with its logs quiet: latency logging off and the
``kserve`` logger at WARNING (it logs every gRPC call at INFO otherwise). Both servers bind all
interfaces (KServe's choice: "[::]" and "0.0.0.0"); the bench sends only to 127.0.0.1.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer
from trivial import MODEL, OUTPUT, expected


class Trivial(Model):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__(MODEL)
        self.ready = True

    def predict(self, payload: InferRequest, headers: dict[str, str] | None = None) -> Any:
        y = expected(payload.inputs[0].as_numpy())
        out = InferOutput(name=OUTPUT, shape=list(y.shape), datatype="FP32")
        out.set_data_from_numpy(y, binary_data=True)
        return InferResponse(model_name=self.name, infer_outputs=[out], response_id=payload.id)


def main() -> None:
    server = ModelServer(
        grpc_port=int(sys.argv[1]), http_port=int(sys.argv[2]), enable_latency_logging=False
    )
    for name in ("kserve", "kserve.trace", "uvicorn", "uvicorn.access"):
        logging.getLogger(name).setLevel(logging.WARNING)
    server.start([Trivial()])


if __name__ == "__main__":
    main()
