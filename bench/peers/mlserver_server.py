"""MLServer (Seldon's, in its own venv) serving the trivial model through a custom runtime.

    python mlserver_server.py GRPC_PORT FOLDER

Writes FOLDER/settings.json (the gRPC port, free HTTP and metrics ports, loopback, everything
else MLServer's defaults, so inference runs in its one parallel worker process as users get it)
and FOLDER/trivial/ (model-settings.json and the runtime below), then becomes ``mlserver start``.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

RUNTIME = """
import sys
sys.path.insert(0, {here!r})
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from trivial import OUTPUT, expected


class Trivial(MLModel):
    async def load(self) -> bool:
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        y = expected(NumpyCodec.decode_input(payload.inputs[0]))
        return InferenceResponse(
            model_name=self.name, outputs=[NumpyCodec.encode_output(OUTPUT, y)]
        )
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    sys.path.insert(0, str(HERE))
    from trivial import MODEL

    folder = Path(sys.argv[2])
    model = folder / MODEL
    model.mkdir(parents=True, exist_ok=True)
    settings = {
        "host": "127.0.0.1",
        "grpc_port": int(sys.argv[1]),
        "http_port": free_port(),
        "metrics_port": free_port(),
    }
    (folder / "settings.json").write_text(json.dumps(settings))
    (model / "runtime_trivial.py").write_text(RUNTIME.format(here=str(HERE)))
    (model / "model-settings.json").write_text(
        json.dumps({"name": MODEL, "implementation": "runtime_trivial.Trivial"})
    )
    mlserver = Path(sys.executable).parent / "mlserver"
    os.execv(str(mlserver), [str(mlserver), "start", str(folder)])


if __name__ == "__main__":
    main()
