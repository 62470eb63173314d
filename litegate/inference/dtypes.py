"""Open Inference Protocol v2 datatypes <-> numpy <-> ONNX Runtime type strings."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeAlias

import numpy as np
import numpy.typing as npt

Tensor: TypeAlias = npt.NDArray[np.generic]
"""A tensor of any datatype (BYTES tensors are object arrays of ``str``)."""
Tensors: TypeAlias = Mapping[str, Tensor]
"""Named tensors: a request's inputs or a run's outputs."""
DType: TypeAlias = np.dtype[np.generic]

BYTES = "BYTES"
"""Strings: object arrays of ``str`` (ONNX string tensors hold text)."""

V2_TO_NUMPY: dict[str, DType] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    BYTES: np.dtype(object),
}
NUMPY_TO_V2: dict[DType, str] = {v: k for k, v in V2_TO_NUMPY.items()}

ORT_TO_V2: dict[str, str] = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}


def numpy_dtype(datatype: str) -> DType:
    """The numpy dtype for a v2 datatype; ``KeyError`` for unsupported ones."""
    return V2_TO_NUMPY[datatype]


def v2_datatype(dtype: npt.DTypeLike) -> str:
    return NUMPY_TO_V2[np.dtype(dtype)]
