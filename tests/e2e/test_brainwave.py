"""The Brainwave compatibility layer: the how-to's own code, import lines changed, end to end.

Everything that imports ``fpga_serve.brainwave`` runs in a process of its own: the layer puts
TensorFlow in graph mode, as TensorFlow 1 was.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from brainwave_seed import HERE, SMALL_SIZE, run_seed
from fpga_serve_client import PredictionClient
from serving import run_server, scores_in_process, server_env


def _top(scores: Any, k: int = 5) -> list[int]:
    return [int(i) for i in np.argsort(-np.asarray(scores), kind="stable")[:k]]


KEY = "brainwave-primary-4c1e"


@pytest.fixture(scope="module")
def repository_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A server with an empty model repository and a key, as an operator would start it."""
    repo = tmp_path_factory.mktemp("repository")
    with run_server(
        [], "--model-repository", str(repo), env={"FPGA_SERVE_API_KEYS": json.dumps([KEY])}
    ) as server:
        server.repo = repo  # type: ignore[attr-defined]
        yield server


@pytest.fixture(scope="module")
def seeded(
    tmp_path_factory: pytest.TempPathFactory, china_jpg: bytes, repository_server: Any
) -> Any:
    """All eight of the how-to's blocks at 32x32: define, save, register, deploy, call, delete."""
    config = {"address": repository_server.address, "access_token": KEY, "workspace_name": "lab"}
    return run_seed(tmp_path_factory.mktemp("seed"), 8, china_jpg, config, small=True)


def test_seed_blocks_define_and_save_the_pipeline(seeded: Any) -> None:
    assert seeded.blocks[0].strip() == f"(None, {SMALL_SIZE}, {SMALL_SIZE}, 3)"
    assert seeded.blocks[1].split() == ["1.0", "resnet50/features:0", "(None,", "2048)"]
    zip_path = Path(str(seeded.outcome["zip"]))
    assert seeded.blocks[3].strip() == str(zip_path) and zip_path.is_file()
    assert "RandomWeightsWarning" in seeded.stderr  # nothing can be downloaded: said loudly
    assert "DefaultCalibrationWarning" in seeded.stderr
    with zipfile.ZipFile(zip_path) as zf:
        manifest = json.loads(zf.read("service_def.json"))
        calibration = json.loads(zf.read("stages/1/calibration.json"))
    kinds = [s["kind"] for s in manifest["stages"]]
    assert kinds == ["tensorflow_graphdef", "fpga", "tensorflow_graphdef"]
    assert manifest["stages"][0]["inputs"][0]["name"] == "Placeholder:0"
    assert calibration["samples"] == 2  # the zoo's default: the two sample photos


def test_seed_blocks_deploy_call_and_delete_on_a_running_server(
    seeded: Any, repository_server: Any
) -> None:
    """Registered, deployed, called with the how-to's own open(...) and loop, deleted: the
    answers are the user's Session's, and the server is left as it was."""
    address = repository_server.address
    # ws.name, resource_group, location (the server), subscription_id; wait_for_deployment(True)
    printed = seeded.blocks[4].splitlines()
    assert printed == ["lab", "", address, "", "imagenet-infer version 1: Healthy"]
    local = np.asarray(seeded.outcome["local"], np.float32)
    ranked = seeded.outcome["sorted_results"]
    assert [i for i, _ in ranked[:5]] == _top(local)
    np.testing.assert_allclose([c for _, c in ranked], np.sort(local)[::-1], rtol=1e-5, atol=1e-7)
    from fpga_serve.models import imagenet_labels

    labels = imagenet_labels()
    printed = seeded.blocks[6].strip().splitlines()
    assert printed == [f"{labels[i]} confidence: {c}" for i, c in ranked[:5]]
    with PredictionClient(address, access_token=KEY) as client:
        assert client.models() == []
    assert [p.name for p in repository_server.repo.iterdir() if not p.name.startswith(".")] == []


def test_the_saved_zip_computes_what_the_users_session_computed(
    seeded: Any, china_jpg: bytes
) -> None:
    """The session runs the featurizer on the in-process twin; the zip, loaded as a server
    loads it, gives the same confidences (same integer program, same float stages)."""
    local = np.asarray(seeded.outcome["local"], np.float32)
    loaded = scores_in_process(Path(str(seeded.outcome["zip"])), china_jpg)
    assert loaded.shape == (1000,)
    np.testing.assert_allclose(loaded, local, rtol=1e-5, atol=1e-7)
    assert _top(loaded) == _top(local)


def test_the_saved_zip_serves_brainwave_requests(seeded: Any, china_jpg: bytes) -> None:
    """Served from the command line, it answers the Brainwave clients' requests too."""
    zip_path = Path(str(seeded.outcome["zip"]))
    local = np.asarray(seeded.outcome["local"], np.float32)
    with run_server([zip_path]) as server, PredictionClient(server.address) as client:
        scores = client.score_image(china_jpg)
        tensor_named = PredictionClient(server.address, input_name="Placeholder:0")
        with tensor_named:
            by_tensor_name = tensor_named.score_image(china_jpg)
    np.testing.assert_allclose(scores, local, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(by_tensor_name, scores)


@pytest.fixture(scope="module")
def checks(tmp_path_factory: pytest.TempPathFactory, photo_dir: Path) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("checks")
    done = subprocess.run(  # noqa: PLW1510 - checked below
        [sys.executable, str(HERE / "brainwave_checks.py"), str(photo_dir / "china.jpg")],
        cwd=work,
        env=server_env({"HOME": str(work)}),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return dict(json.loads((work / "checks.json").read_text()))


@pytest.mark.parametrize(
    ("name", "features"),
    [("QuantizedResnet152", 2048), ("QuantizedDensenet121", 1024), ("QuantizedVgg16", 512)],
)
def test_the_other_zoo_models_follow_the_same_flow(
    checks: dict[str, Any], china_jpg: bytes, name: str, features: int
) -> None:
    built = checks[name]
    family = name.removeprefix("Quantized").lower()
    assert built["feature_name"] == f"{family}/features:0"
    assert built["feature_shape"] == [None, features]
    local = np.asarray(built["local"], np.float32)[0]
    np.testing.assert_allclose(
        scores_in_process(Path(built["zip"]), china_jpg), local, rtol=1e-5, atol=1e-7
    )


def test_calibration_images_replace_the_default(checks: dict[str, Any]) -> None:
    built = checks["explicit_calibration"]
    assert "DefaultCalibrationWarning" not in built["warnings"]
    assert checks["QuantizedVgg16"]["warnings"].count("DefaultCalibrationWarning") == 1
    with zipfile.ZipFile(built["zip"]) as zf:
        assert json.loads(zf.read("stages/1/calibration.json"))["samples"] == 1


REFUSALS = {
    "stage_before_import": "call model.import_graph_def(images) in this session's graph first",
    "strings_as_images": "import_graph_def needs float32 images [N, size, size, 3]",
    "not_frozen": "is_frozen=False (fine-tuning the featurizer) is not supported",
    "not_square": "preprocess_array makes square images; got 32x48",
    "floats_as_images": "preprocess_array needs a string tensor, not float32",
    "size_mismatch": "the model was made for 64x64 images, the tensor has 32x32",
    "bad_calibration": "calibration_images must be [N, 32, 32, 3], not [2, 8, 8, 3]",
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_misuse_gets_a_clear_refusal(checks: dict[str, Any], case: str) -> None:
    assert REFUSALS[case] in checks["refusals"][case]


@pytest.mark.slow
def test_seed_blocks_full_size(tmp_path: Path, china_jpg: bytes, repository_server: Any) -> None:
    """All of the how-to's blocks unedited (224x224 images) against the running server."""
    config = {"address": repository_server.address, "access_token": KEY}
    run = run_seed(tmp_path, 8, china_jpg, config, small=False)
    assert run.blocks[0].strip() == "(None, 224, 224, 3)"
    local = np.asarray(run.outcome["local"], np.float32)
    ranked = run.outcome["sorted_results"]
    assert [i for i, _ in ranked[:5]] == _top(local)
    np.testing.assert_allclose([c for _, c in ranked], np.sort(local)[::-1], rtol=1e-5, atol=1e-7)
