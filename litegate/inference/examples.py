"""Small real ONNX models for trying the server (``litegate models example``).

Built with the ``onnx`` helper API from seeded weights, so the same command always
writes the same file. ``onnx`` is imported only when a model is written.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
MLP_IN, MLP_HIDDEN, MLP_OUT = 256, 64, 16


def mlp_weights() -> tuple[F32, F32, F32, F32]:
    rng = np.random.default_rng(256)
    w1 = (rng.standard_normal((MLP_IN, MLP_HIDDEN)) / np.sqrt(MLP_IN)).astype(np.float32)
    w2 = (rng.standard_normal((MLP_HIDDEN, MLP_OUT)) / np.sqrt(MLP_HIDDEN)).astype(np.float32)
    return w1, np.zeros(MLP_HIDDEN, np.float32), w2, np.zeros(MLP_OUT, np.float32)


def mlp_reference(x: F32) -> F32:
    w1, b1, w2, b2 = mlp_weights()
    y: F32 = np.maximum(x @ w1 + b1, 0) @ w2 + b2
    return y


def write_mlp(path: Path) -> Path:
    """``y = relu(x @ W1 + b1) @ W2 + b2``: x FP32 [-1, 256] -> y FP32 [-1, 16]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w1, b1, w2, b2 = mlp_weights()
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "W1", "B1"], ["h"]),
         helper.make_node("Relu", ["h"], ["hr"]),
         helper.make_node("Gemm", ["hr", "W2", "B2"], ["y"])],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", MLP_IN])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", MLP_OUT])],
        initializer=[numpy_helper.from_array(w1, "W1"), numpy_helper.from_array(b1, "B1"),
                     numpy_helper.from_array(w2, "W2"), numpy_helper.from_array(b2, "B2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              ir_version=8)
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


EXAMPLES: dict[str, Callable[[Path], Path]] = {"mlp": write_mlp}
