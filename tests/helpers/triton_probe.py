"""Runs in its own venv with NVIDIA's tritonclient (see scripts/setup.sh): calls an fpga-serve
server the way Triton users do and prints what it got as JSON.
Usage: python triton_probe.py HOST:PORT MODEL IMAGE"""

import json
import sys

import numpy as np
import tritonclient.grpc as grpcclient

url, model, image = sys.argv[1:4]
client = grpcclient.InferenceServerClient(url=url)
meta = client.get_model_metadata(model)
with open(image, "rb") as fh:
    data = np.array([fh.read()], dtype=object)
inp = grpcclient.InferInput(meta.inputs[0].name, [1], "BYTES")
inp.set_data_from_numpy(data)
result = client.infer(model, [inp], outputs=[grpcclient.InferRequestedOutput(meta.outputs[0].name)])
index = client.get_model_repository_index()
print(
    json.dumps(
        {
            "live": client.is_server_live(),
            "ready": client.is_model_ready(model),
            "platform": meta.platform,
            "inputs": [(t.name, t.datatype, list(t.shape)) for t in meta.inputs],
            "scores": result.as_numpy(meta.outputs[0].name).tolist(),
            "index": [(m.name, m.version, m.state) for m in index.models],
        }
    )
)
