"""Helpers shared by the TensorFlow-based stage kinds (imports TensorFlow)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from fpga_serve.core.errors import FpgaServeError, InvalidInput
from fpga_serve.core.types import DType, TensorSpec


def spec_from_tf(name: str, dtype: tf.DType, shape: tf.TensorShape) -> TensorSpec:
    if shape.rank is None:
        raise InvalidInput(f"tensor {name!r} has unknown rank; give it a shape")
    dt = DType.BYTES if dtype == tf.string else DType.from_numpy(dtype.as_numpy_dtype)
    return TensorSpec(name, dt, tuple(-1 if d is None else int(d) for d in shape.as_list()))


def to_numpy(value: Any, spec: TensorSpec) -> np.ndarray:
    array = value.numpy() if hasattr(value, "numpy") else np.asarray(value)
    if spec.dtype is DType.BYTES:
        return array.astype(object, copy=False)
    return array.astype(spec.dtype.numpy, copy=False)


_NOISE = re.compile(
    r"^(Graph execution error:|Detected at node .*|<stack traces unavailable>|Node: .*)$"
)
_TAILS = re.compile(r"\s*(\[\[\{\{node [^}]*\}\}\]\]|\[Op:[^\]]*\])")


def tf_error_text(exc: BaseException) -> str:
    """What TensorFlow found wrong, without its wrapping: a graph execution error's message
    starts with "Graph execution error:", the node and the stack where it was defined, and ends
    with the node and op names; the line between says what was wrong ("Unknown image file
    format. One of JPEG, PNG, GIF, BMP, WebP required.")."""
    text = str(getattr(exc, "message", None) or exc)
    kept = []
    for line in text.splitlines():
        if line.startswith("  ") or _NOISE.match(line.strip()):  # stack frames, headers
            continue
        useful = _TAILS.sub("", line).strip()
        if useful:
            kept.append(useful)
    return " ".join(kept) or type(exc).__name__


class TfRunner:
    """Runs a TensorFlow callable positionally; bad data becomes InvalidInput naming the item."""

    def __init__(
        self,
        name: str,
        kind: str,
        inputs: tuple[TensorSpec, ...],
        outputs: tuple[TensorSpec, ...],
        call: Callable[[list[tf.Tensor]], Sequence[Any]],
        keep: Any = None,
    ) -> None:
        self.name = name
        self.kind = kind
        self.inputs = inputs
        self.outputs = outputs
        self._call = call
        self._keep = keep  # the loaded object owning the graph

    def _once(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        tensors = [
            tf.constant(a, dtype=tf.string if s.dtype is DType.BYTES else None)
            for a, s in zip(arrays, self.inputs, strict=True)
        ]
        results = self._call(tensors)
        return [to_numpy(v, s) for v, s in zip(results, self.outputs, strict=True)]

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        if self._keep is None:
            raise FpgaServeError(f"stage {self.name!r} is closed")
        try:
            return self._once(inputs)
        except (tf.errors.InvalidArgumentError, tf.errors.OutOfRangeError) as exc:
            raise self._locate(inputs, exc) from None

    def _locate(self, inputs: Sequence[np.ndarray], exc: Exception) -> InvalidInput:
        """On the failure path only: find the first item that fails on its own."""
        message = tf_error_text(exc)
        batch = int(inputs[0].shape[0]) if inputs and inputs[0].ndim else 1
        if batch > 1:
            for index in range(batch):
                try:
                    self._once([a[index : index + 1] for a in inputs])
                except (tf.errors.InvalidArgumentError, tf.errors.OutOfRangeError) as item_exc:
                    item_msg = tf_error_text(item_exc)
                    return InvalidInput(
                        f"stage {self.name!r} cannot process item {index}: {item_msg}"
                    )
        return InvalidInput(f"stage {self.name!r} cannot process item 0: {message}")

    def close(self) -> None:
        self._keep = None
        self._call = lambda tensors: ()
