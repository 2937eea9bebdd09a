"""``fpga-serve build`` and ``fpga-serve inspect``: make a zoo pipeline zip, describe any zip."""

from __future__ import annotations

import json
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from fpga_serve.core.errors import InvalidInput

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif"}


def sample_photos() -> list[Path]:
    """Photos that scikit-learn ships (china.jpg, flower.jpg), when it is installed."""
    try:
        import sklearn.datasets
    except ImportError:
        return []
    folder = Path(sklearn.datasets.__file__).parent / "images"
    return sorted(p for p in folder.glob("*.jpg"))


def calibration_batch(paths: list[Path], family: str, size: int, limit: int) -> np.ndarray:
    """Preprocess up to ``limit`` readable images exactly as the served pipeline will."""
    import tensorflow as tf

    from fpga_serve.preprocessing import preprocess_array

    images: list[np.ndarray] = []
    for path in paths:
        if len(images) >= limit:
            break
        try:
            data = path.read_bytes()
            images.append(preprocess_array(tf.constant([data]), family, size).numpy()[0])
        except (OSError, tf.errors.InvalidArgumentError):
            print(f"skipping unreadable image {path}", file=sys.stderr)
    if not images:
        raise InvalidInput(f"no readable image among {len(paths)} calibration files")
    return np.stack(images)


def _progress(step: str, done: int, total: int) -> None:
    print(f"  {step}: {done}/{total}", file=sys.stderr, flush=True)


def build(ns: Any) -> int:
    from fpga_serve.compiler import CompileOptions
    from fpga_serve.models import ZOO
    from fpga_serve.pipeline import ModelDefinition

    family = ns.model
    if ns.calibration is not None:
        folder = Path(ns.calibration)
        if not folder.is_dir():
            raise InvalidInput(f"calibration folder {folder} does not exist")
        paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise InvalidInput(f"calibration folder {folder} holds no image files")
    else:
        paths = sample_photos()
        if not paths:
            raise InvalidInput("give --calibration DIR (a folder of representative images)")
        print(
            f"calibrating on {len(paths)} sample photos; pass --calibration DIR with ~100 "
            "images from your own data for production",
            file=sys.stderr,
        )
    start = time.perf_counter()
    zoo = ZOO[family](ns.model_path, weights=ns.weights, input_size=ns.size)
    print(f"{zoo.keras_name}: weights {zoo.weights_source}", file=sys.stderr)
    batch = calibration_batch(paths, family, ns.size, ns.calibration_count)
    print(f"compiling for the overlay ({len(batch)} calibration images)", file=sys.stderr)
    options = CompileOptions(calibration_method=ns.method, target=ns.target)
    featurizer = zoo.compile(batch, options, progress=_progress)
    model_def = ModelDefinition(name=ns.name or family)
    model_def.pipeline.append(zoo.preprocess_stage())
    model_def.pipeline.append(featurizer)
    model_def.pipeline.append(zoo.get_default_classifier())
    model_def.labels = zoo.labels
    model_def.save(ns.output)
    print(f"wrote {ns.output} in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


def _print_device_memory(zf: zipfile.ZipFile, stage_dir: str) -> None:
    """What a board's contiguous (CMA) memory must hold for the program, per batch size."""
    import tempfile

    from fpga_serve.core import descriptors
    from fpga_serve.core.isa import Program
    from fpga_serve.hw.pynq_device import device_memory

    with tempfile.TemporaryDirectory() as tmp:
        for name in ("program.json", "weights.npz"):
            (Path(tmp) / name).write_bytes(zf.read(f"{stage_dir}/{name}"))
        program = Program.load(Path(tmp))
    if not program.planned:
        print("  device memory: not planned for a preset (runs on the twin only)")
        return
    image = descriptors.pack(program)
    per_image = device_memory(image, 1)
    sizes = ", ".join(
        f"batch {n}: {sum(device_memory(image, n).values()) / 2**20:.1f} MiB" for n in (1, 8, 64)
    )
    each = ", ".join(f"{per_image[k] / 2**10:,.1f} KiB {k}" for k in ("input", "output", "scratch"))
    print(
        f"  device memory on a {program.target} board (CMA): {image.descriptors.size:,} B of "
        f"descriptors + {image.weights.size / 2**20:.1f} MiB of weights, once, + per image "
        f"{each}; {sizes}; device image {image.digest()[:12]}"
    )


def inspect(ns: Any) -> int:
    from fpga_serve.pipeline import ModelDefinition

    model_def = ModelDefinition.load(ns.zip)
    manifest = model_def.manifest
    assert manifest is not None
    print(f"model {manifest.name}  ({manifest.created_by})")
    print(f"labels: {len(model_def.labels) if model_def.labels else 'none'}")
    with zipfile.ZipFile(ns.zip) as zf:
        for index, stage in enumerate(manifest.stages):
            ins = ", ".join(s.describe() for s in stage.inputs)
            outs = ", ".join(s.describe() for s in stage.outputs)
            print(f"\nstage {index}: {stage.name} [{stage.kind}]  {ins} -> {outs}")
            if stage.kind != "fpga":
                continue
            summary = json.loads(zf.read(f"{stage.dir}/summary.json"))
            calib = json.loads(zf.read(f"{stage.dir}/calibration.json"))
            program = json.loads(zf.read(f"{stage.dir}/program.json"))
            print(
                f"  overlay spec {program['spec_version']}; calibration: {calib['method']}"
                f"{' p' + str(calib['percentile']) if calib.get('percentile') else ''} on "
                f"{calib['samples']} images"
            )
            print(
                f"  {'layer':34} {'op':12} {'output':>14} {'MACs':>13} {'weights B':>10} "
                f"{'range':>9}"
            )
            for row in summary:
                shape = "x".join(map(str, row["shape"]))
                rng = row["scale"] * 127
                print(
                    f"  {row['name'][:34]:34} {row['op']:12} {shape:>14} {row['macs']:>13,} "
                    f"{row['weight_bytes']:>10,} {rng:>9.3g}"
                )
            macs = sum(r["macs"] for r in summary)
            wbytes = sum(r["weight_bytes"] for r in summary)
            print(
                f"  total: {len(program['instrs'])} instructions, {macs / 1e9:.2f} GMAC, "
                f"{wbytes / 1e6:.1f} MB of weights"
            )
            _print_device_memory(zf, stage.dir)
    return 0
