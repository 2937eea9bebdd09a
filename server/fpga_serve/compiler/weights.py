"""Does a weight file fit a model? Compare them layer by layer before loading or compiling.

Reads the three layouts Keras produces: the legacy HDF5 format (Keras 2 and the keras.applications
downloads: a group per layer with ``weight_names``), Keras 3 ``*.weights.h5`` (``layers/.../vars/i``
groups named by a ``name`` attribute), and ``*.keras`` archives (which hold the latter).
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fpga_serve.core.errors import CompileError

Shapes = list[tuple[int, ...]]


@dataclass(frozen=True)
class WeightMismatch:
    layer: str
    kind: str
    """'missing' (no weights for the layer in the file) or 'shape'"""
    model: Shapes
    file: Shapes

    def __str__(self) -> str:
        if self.kind == "missing":
            return f"layer {self.layer!r}: the file has no weights for it (needs {self.model})"
        return (
            f"layer {self.layer!r}: the file holds weights of shapes {self.file}, the "
            f"architecture needs {self.model}"
        )


def _model_shapes(model: Any, prefix: str = "", flat: bool = False) -> dict[str, Shapes]:
    """Layer name -> its weights' shapes. Nested models are entered (names ``outer/inner``),
    unless ``flat`` (the legacy format stores a nested model as one layer)."""
    shapes: dict[str, Shapes] = {}
    for layer in model.layers:
        if hasattr(layer, "layers") and not flat:
            shapes.update(_model_shapes(layer, f"{prefix}{layer.name}/"))
        elif layer.weights:
            shapes[prefix + layer.name] = [tuple(int(d) for d in w.shape) for w in layer.weights]
    return shapes


def _decode(name: Any) -> str:
    return name.decode() if isinstance(name, bytes) else str(name)


def _legacy_shapes(root: Any) -> dict[str, Shapes]:
    root = root.get("model_weights", root)
    shapes: dict[str, Shapes] = {}
    for layer_name, group in root.items():
        names = [_decode(n) for n in group.attrs.get("weight_names", [])]
        if names:
            shapes[layer_name] = [tuple(group[n].shape) for n in names]
    return shapes


def _keras3_shapes(group: Any, prefix: str = "") -> dict[str, Shapes]:
    shapes: dict[str, Shapes] = {}
    for child in group.get("layers", {}).values():
        name = _decode(child["vars"].attrs.get("name", "")) if "vars" in child else ""
        if "layers" in child:
            shapes.update(_keras3_shapes(child, f"{prefix}{name}/"))
        elif "vars" in child and len(child["vars"]):
            variables = child["vars"]
            shapes[prefix + name] = [tuple(variables[str(i)].shape) for i in range(len(variables))]
    return shapes


def file_weight_shapes(path: Path) -> tuple[dict[str, Shapes], bool]:
    """Layer name -> weight shapes in the file, and whether it is the legacy layout."""
    import h5py

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                raw = io.BytesIO(zf.read("model.weights.h5"))
            handle = h5py.File(raw, "r")
        else:
            handle = h5py.File(path, "r")
    except (OSError, KeyError, zipfile.BadZipFile) as exc:
        raise CompileError(f"{path}: not a readable Keras weight file ({exc})") from exc
    with handle as f:
        if "layers" in f and "vars" in f:
            return _keras3_shapes(f), False
        return _legacy_shapes(f), True


def weight_mismatches(model: Any, path: Path) -> list[WeightMismatch]:
    """Every layer of ``model`` whose weights the file lacks or holds in other shapes, in the
    model's layer order (empty: the file fits)."""
    found, legacy = file_weight_shapes(Path(path))
    wanted = _model_shapes(model, flat=legacy)
    out = []
    for name, shapes in wanted.items():
        if name not in found:
            out.append(WeightMismatch(name, "missing", shapes, []))
        elif found[name] != shapes:
            out.append(WeightMismatch(name, "shape", shapes, found[name]))
    return out


def check_weights(model: Any, path: Path) -> None:
    """CompileError naming the first layer whose weights do not fit."""
    bad = weight_mismatches(model, path)
    if bad:
        more = f" (and {len(bad) - 1} more layers)" if len(bad) > 1 else ""
        raise CompileError(f"{path}: {bad[0]}{more}")
