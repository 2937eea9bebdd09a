"""Regenerate the vendored schema subsets in tests/deploy/schemas/ from their upstream sources.

python scripts/vendor_schemas.py kserve CRD.yaml COMMIT
    CRD.yaml: config/crd/full/serving.kserve.io_inferenceservices.yaml of kserve/kserve.
    Writes tests/deploy/schemas/kserve-inferenceservice-v1beta1.json: the v1beta1 openAPIV3Schema
    with spec.predictor only (its pod-level fields and containers; the built-in framework
    predictors, transformer, explainer and status dropped) and without descriptions.
python scripts/vendor_schemas.py compose compose-spec.json COMMIT
    compose-spec.json: schema/compose-spec.json of compose-spec/compose-spec, copied whole.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

OUT = Path(__file__).resolve().parent.parent / "tests" / "deploy" / "schemas"
PREDICTOR_FIELDS = [
    "affinity",
    "annotations",
    "containerConcurrency",
    "containers",
    "labels",
    "maxReplicas",
    "minReplicas",
    "nodeSelector",
    "runtimeClassName",
    "scaleMetric",
    "scaleTarget",
    "securityContext",
    "serviceAccountName",
    "terminationGracePeriodSeconds",
    "timeout",
    "tolerations",
    "volumes",
]


def strip(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: strip(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [strip(v) for v in node]
    return node


def kserve(crd_path: Path, commit: str) -> None:
    crd = yaml.safe_load(crd_path.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1beta1"]
    schema = version["schema"]["openAPIV3Schema"]
    predictor = schema["properties"]["spec"]["properties"]["predictor"]
    predictor["properties"] = {k: predictor["properties"][k] for k in PREDICTOR_FIELDS}
    schema["properties"]["spec"]["properties"] = {"predictor": predictor}
    schema["properties"].pop("status", None)
    source = {
        "repository": "kserve/kserve",
        "path": "config/crd/full/serving.kserve.io_inferenceservices.yaml",
        "commit": commit,
        "subset": "v1beta1 openAPIV3Schema; spec.predictor fields " + ", ".join(PREDICTOR_FIELDS),
    }
    write("kserve-inferenceservice-v1beta1.json", {"x-source": source, **strip(schema)})


def compose(schema_path: Path, commit: str) -> None:
    schema = json.loads(schema_path.read_text())
    source = {
        "repository": "compose-spec/compose-spec",
        "path": "schema/compose-spec.json",
        "commit": commit,
    }
    write("compose-spec.json", {"x-source": source, **schema})


def write(name: str, document: dict[str, Any]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / name).write_text(json.dumps(document, indent=1, sort_keys=False) + "\n")
    print(OUT / name)


if __name__ == "__main__":
    kind, path, commit = sys.argv[1:4]
    {"kserve": kserve, "compose": compose}[kind](Path(path), commit)
