"""Runs in its own venv with NVIDIA's tritonclient: deploys a pipeline zip the Triton way
(``load_model(files=...)``), scores, then loads a model already on disk (the repository
extension), and prints what it saw as JSON.
Usage: python triton_deploy_probe.py HOST:PORT ZIP IMAGE DISK_MODEL"""

import json
import sys

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

url, zip_path, image, disk_model = sys.argv[1:5]
headers = {"authorization": "Bearer " + sys.argv[5]} if len(sys.argv) > 5 else None
client = grpcclient.InferenceServerClient(url=url)
with open(zip_path, "rb") as fh:
    zip_bytes = fh.read()
client.load_model("uploaded", headers=headers, config="{}", files={"file:1/model.zip": zip_bytes})
ready = client.is_model_ready("uploaded", headers=headers)
with open(image, "rb") as fh:
    data = np.array([fh.read()], dtype=object)
inp = grpcclient.InferInput("images", [1], "BYTES")
inp.set_data_from_numpy(data)
output = client.get_model_metadata("uploaded", headers=headers).outputs[0].name
scores = client.infer("uploaded", [inp], headers=headers).as_numpy(output)
try:  # the same version again: refused, the loaded one keeps serving
    client.load_model("uploaded", headers=headers, files={"file:1/model.zip": zip_bytes})
    again = "loaded"
except InferenceServerException as exc:
    again = exc.message()
try:
    client.load_model("uploaded", headers=headers, files={"file:model.zip": b"PK junk"})
    junk = "loaded"
except InferenceServerException as exc:
    junk = exc.message()
client.load_model(disk_model, headers=headers)  # already in the repository directory
disk_ready = client.is_model_ready(disk_model, headers=headers)
index = client.get_model_repository_index(headers=headers)
client.unload_model("uploaded", headers=headers)
print(
    json.dumps(
        {
            "ready": ready,
            "scores": scores.tolist(),
            "again": again,
            "junk": junk,
            "disk_ready": disk_ready,
            "index": [(m.name, m.version, m.state) for m in index.models],
            "after_unload": client.is_model_ready("uploaded", headers=headers),
        }
    )
)
