"""Runs in .venv-triton with NVIDIA's tritonclient: reads a model's configuration and
statistics and asks for classification, as perf_analyzer and Triton users do; prints JSON.
Usage: python triton_extensions_probe.py HOST:PORT MODEL IMAGE REQUESTS"""

import json
import sys

import numpy as np
import tritonclient.grpc as grpcclient

url, model, image, requests = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
client = grpcclient.InferenceServerClient(url=url)
config = client.get_model_config(model, as_json=True)["config"]
before = client.get_inference_statistics(model, as_json=True)["model_stats"]
with open(image, "rb") as fh:
    photo = fh.read()
inp = grpcclient.InferInput(config["input"][0]["name"], [2], "BYTES")
inp.set_data_from_numpy(np.array([photo, photo], dtype=object))
output = config["output"][0]["name"]
classified = grpcclient.InferRequestedOutput(output, class_count=3)
for _ in range(requests - 1):
    result = client.infer(model, [inp], outputs=[classified])
classes = [[c.decode() for c in row] for row in result.as_numpy(output)]
plain = client.infer(model, [inp], outputs=[grpcclient.InferRequestedOutput(output)])
after = client.get_inference_statistics(model, as_json=True)["model_stats"]
print(
    json.dumps(
        {
            "config": config,
            "before": before,
            "after": after,
            "all": client.get_inference_statistics(as_json=True)["model_stats"],
            "classes": classes,
            "scores": plain.as_numpy(output).tolist(),
            "extensions": client.get_server_metadata(as_json=True)["extensions"],
        }
    )
)
