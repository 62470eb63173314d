"""Runs through ONNX Runtime's IO binding, so a GPU session copies each tensor once.

With a plain ``session.run`` on CUDA, ORT allocates the outputs where the graph leaves
them and copies them to fresh numpy arrays, and the inputs go through its generic feed
path. :func:`run_bound` binds the numpy inputs (copied once to the device), binds the
outputs on the session's device and copies them back once, after the run.

:class:`GraphBinding` is the CUDA-graph variant: a captured graph replays fixed device
addresses, so inputs and outputs live in buffers allocated once; each run updates the
input buffers in place and copies the outputs out. One run at a time per session (the
buffers are shared), which is why CUDA graphs are only enabled for static shapes.

The same code binds to ``"cpu"`` on a CPU session (ORT supports it there), which is how
the tests check it gives exactly ``session.run``'s answers on a machine without a GPU.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from litegate.inference.dtypes import Tensor

if TYPE_CHECKING:
    from onnxruntime import InferenceSession, RunOptions


def bindable(inputs: Mapping[str, Tensor]) -> bool:
    """String tensors stay on ``session.run`` (ORT cannot bind them to a device)."""
    return all(a.dtype != object and a.dtype.kind not in "US" for a in inputs.values())


def run_bound(session: InferenceSession, inputs: Mapping[str, Tensor],
              output_names: Sequence[str], device: str, device_id: int,
              run_options: RunOptions | None = None) -> list[Tensor]:
    """One run with inputs bound from numpy and outputs bound on ``device``."""
    binding = session.io_binding()
    for name, array in inputs.items():
        binding.bind_cpu_input(name, np.ascontiguousarray(array))
    for name in output_names:
        binding.bind_output(name, device, device_id)
    session.run_with_iobinding(binding, run_options)
    outputs: list[Tensor] = binding.copy_outputs_to_cpu()
    return outputs


class GraphBinding:
    """Fixed input and output buffers on the device, bound once (CUDA graphs)."""

    def __init__(self, session: InferenceSession, output_names: Sequence[str], device: str,
                 device_id: int, shapes: Mapping[str, tuple[tuple[int, ...], Any]]) -> None:
        """``shapes``: name -> (static shape, numpy dtype) for every input and output."""
        from onnxruntime import OrtValue

        self._session = session
        self._lock = threading.Lock()
        self._binding = session.io_binding()
        self._inputs: dict[str, Any] = {}
        self._outputs: list[Any] = []
        for spec in session.get_inputs():
            shape, dtype = shapes[spec.name]
            value = OrtValue.ortvalue_from_shape_and_type(shape, dtype, device, device_id)
            self._binding.bind_ortvalue_input(spec.name, value)
            self._inputs[spec.name] = value
        for name in output_names:
            shape, dtype = shapes[name]
            value = OrtValue.ortvalue_from_shape_and_type(shape, dtype, device, device_id)
            self._binding.bind_ortvalue_output(name, value)
            self._outputs.append(value)

    def run(self, inputs: Mapping[str, Tensor], run_options: RunOptions | None = None
            ) -> list[Tensor]:
        with self._lock:
            for name, array in inputs.items():
                self._inputs[name].update_inplace(np.ascontiguousarray(array))
            self._session.run_with_iobinding(self._binding, run_options)
            return [value.numpy() for value in self._outputs]
