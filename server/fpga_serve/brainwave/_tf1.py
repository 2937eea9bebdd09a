"""TensorFlow 1 graph mode for Brainwave code, eager scopes for fpga-serve's own work."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import tensorflow as tf

# The one private TensorFlow API this package uses: TF's own graph-mode tests run eager code
# inside graph mode with it. Keras 3 and the compiler need eager execution.
from tensorflow.python.eager import context as _context

COLLECTION = "fpga_serve.brainwave.models"
"""The graph collection holding the zoo models imported into a graph (import_graph_def)."""


def enter_graph_mode() -> None:
    """Placeholders and Sessions, as TensorFlow 1 had them."""
    tf.compat.v1.disable_eager_execution()


@contextmanager
def eager() -> Iterator[None]:
    """Run TensorFlow 2 code (Keras, the compiler, preprocessing of calibration images)."""
    with _context.eager_mode():
        yield
