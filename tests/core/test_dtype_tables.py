"""The server's DType (core/types.py) and the client's wire table (fpga_serve_client.convert) are
the two packages' own copies of the numpy correspondence (the client installs without the
server; the server's TF Serving and Triton types are derived from the client's table): they
must say the same thing for every type a pipeline can take."""

from __future__ import annotations

import numpy as np
from fpga_serve.core.types import DType
from fpga_serve_client.convert import numpy_dtype_of_v2, v2_datatype


def test_every_dtype_means_the_same_numpy_type_on_both_sides() -> None:
    for dtype in DType:
        assert numpy_dtype_of_v2(dtype.value) == dtype.numpy, dtype
        example = np.zeros(1, dtype.numpy) if dtype is not DType.BYTES else np.array([b"x"], object)
        assert v2_datatype(example) == dtype.value, dtype
        assert DType.from_numpy(example.dtype) is dtype
