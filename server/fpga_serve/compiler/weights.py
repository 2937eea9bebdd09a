"""Does a weight file fit a model? Compare them layer by layer before loading or compiling (the
one check: the zoo runs it before Keras loads a file).

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

import numpy as np

from fpga_serve.core.errors import CompileError

Shapes = list[tuple[int, ...]]


@dataclass(frozen=True)
class WeightMismatch:
    layer: str
    kind: str
    """'missing' (no weights for the layer in the file) or 'shape'"""
    model: Shapes
    file: Shapes
    layer_type: str = ""
    """The Keras class of the model's layer (Conv2D, ...)."""

    def __str__(self) -> str:
        named = f"layer {self.layer!r}" + (f" ({self.layer_type})" if self.layer_type else "")
        if self.kind == "missing":
            return f"{named}: the file has no weights for it (needs {self.model})"
        return (
            f"{named}: the file holds weights of shapes {self.file}, the architecture needs "
            f"{self.model}"
        )


def _model_layers(model: Any, prefix: str = "", flat: bool = False) -> dict[str, Any]:
    """Layer name -> each layer with weights. Nested models are entered (names
    ``outer/inner``), unless ``flat`` (the legacy format stores a nested model as one layer)."""
    layers: dict[str, Any] = {}
    for layer in model.layers:
        if hasattr(layer, "layers") and not flat:
            layers.update(_model_layers(layer, f"{prefix}{layer.name}/"))
        elif layer.weights:
            layers[prefix + layer.name] = layer
    return layers


def _decode(name: Any) -> str:
    return name.decode() if isinstance(name, bytes) else str(name)


def _legacy_layers(root: Any) -> dict[str, list[Any]]:
    """Layer name -> its weight datasets in order (the legacy layout's ``weight_names``)."""
    root = root.get("model_weights", root)
    layers: dict[str, list[Any]] = {}
    for layer_name, group in root.items():
        names = [_decode(n) for n in group.attrs.get("weight_names", [])]
        if names:
            layers[layer_name] = [group[n] for n in names]
    return layers


def _legacy_shapes(root: Any) -> dict[str, Shapes]:
    return {name: [tuple(d.shape) for d in data] for name, data in _legacy_layers(root).items()}


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


def _open(path: Path) -> Any:
    """The HDF5 file of a weight file (a ``.keras`` archive's ``model.weights.h5``)."""
    import h5py

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                raw = io.BytesIO(zf.read("model.weights.h5"))
            return h5py.File(raw, "r")
        return h5py.File(path, "r")
    except (OSError, KeyError, zipfile.BadZipFile) as exc:
        raise CompileError(f"{path}: not a readable Keras weight file ({exc})") from exc


def file_weight_shapes(path: Path) -> tuple[dict[str, Shapes], bool]:
    """Layer name -> weight shapes in the file, and whether it is the legacy layout."""
    with _open(path) as f:
        if "layers" in f and "vars" in f:
            return _keras3_shapes(f), False
        return _legacy_shapes(f), True


def legacy_layer_weights(path: Path, layer: str) -> list[np.ndarray]:
    """The weights of layer ``layer`` in a legacy-layout file (a keras.applications download),
    in order; empty when the file has none for it."""
    with _open(path) as f:
        return [np.asarray(d) for d in _legacy_layers(f).get(layer, [])]


def weight_mismatches(model: Any, path: Path) -> list[WeightMismatch]:
    """Every layer of ``model`` whose weights the file lacks or holds in other shapes, in the
    model's layer order (empty: the file fits)."""
    found, legacy = file_weight_shapes(Path(path))
    out = []
    for name, layer in _model_layers(model, flat=legacy).items():
        shapes = [tuple(int(d) for d in w.shape) for w in layer.weights]
        kind = type(layer).__name__
        if name not in found:
            out.append(WeightMismatch(name, "missing", shapes, [], kind))
        elif found[name] != shapes:
            out.append(WeightMismatch(name, "shape", shapes, found[name], kind))
    return out


def check_weights(model: Any, path: Path) -> None:
    """CompileError naming the first layer whose weights do not fit."""
    bad = weight_mismatches(model, path)
    if bad:
        more = f" (and {len(bad) - 1} more layers)" if len(bad) > 1 else ""
        raise CompileError(f"{path}: {bad[0]}{more}")
