"""Model signatures: extracted from a session, stored as JSON, used to validate tensors.

A signature is ``{"inputs": [{"name", "datatype", "shape"}], "outputs": [...]}`` with
v2 datatypes (``FP32``, ``INT64``...) and ``-1`` for dynamic dimensions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from litegate.errors import BadRequest
from litegate.inference.dtypes import NUMPY_TO_V2, ORT_TO_V2, Tensors

if TYPE_CHECKING:
    from onnxruntime import InferenceSession


@dataclass(frozen=True, slots=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TensorSpec:
        return cls(str(data["name"]), str(data["datatype"]), tuple(int(d) for d in data["shape"]))


@dataclass(frozen=True, slots=True)
class Signature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Signature:
        return cls(
            tuple(TensorSpec.from_dict(t) for t in data.get("inputs", ())),
            tuple(TensorSpec.from_dict(t) for t in data.get("outputs", ())),
        )

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.outputs)

    @property
    def batchable(self) -> bool:
        """True when every input and output has a dynamic first (batch) dimension."""
        return bool(self.inputs) and all(
            len(t.shape) >= 1 and t.shape[0] == -1 for t in (*self.inputs, *self.outputs)
        )


def _dims(shape: Sequence[int | str | None] | None) -> tuple[int, ...]:
    """ORT gives a dynamic dimension as a name or None: -1 here."""
    return tuple(d if isinstance(d, int) and d >= 0 else -1 for d in (shape or ()))


def signature_from_session(session: InferenceSession) -> Signature:
    """Read names, datatypes and shapes (dynamic dims as -1) from an ORT session."""
    return Signature(
        tuple(
            TensorSpec(i.name, ORT_TO_V2.get(i.type, i.type), _dims(i.shape))
            for i in session.get_inputs()
        ),
        tuple(
            TensorSpec(o.name, ORT_TO_V2.get(o.type, o.type), _dims(o.shape))
            for o in session.get_outputs()
        ),
    )


def _fmt(shape: tuple[int, ...] | list[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def validate_inputs(signature: Signature, tensors: Tensors) -> None:
    """Raise :class:`BadRequest` naming the offending input, or return silently."""
    if len(tensors) != len(signature.inputs) or any(
            spec.name not in tensors for spec in signature.inputs):
        expected = [t.name for t in signature.inputs]
        for name in tensors:
            if name not in expected:
                raise BadRequest(
                    f"unexpected input {name!r}; the model expects {', '.join(expected)}")
        spec = next(t for t in signature.inputs if t.name not in tensors)
        raise BadRequest(f"missing input {spec.name!r} ({spec.datatype} {_fmt(spec.shape)})")
    for spec in signature.inputs:
        array = tensors[spec.name]
        got = NUMPY_TO_V2.get(array.dtype)
        if got is None:  # named only for the error: str(dtype) is slow on every request
            got = str(array.dtype)
        if got != spec.datatype:
            raise BadRequest(
                f"input {spec.name!r}: datatype {got} does not match the model's {spec.datatype}"
            )
        if len(array.shape) != len(spec.shape) or any(
            want != -1 and want != have for want, have in zip(spec.shape, array.shape)
        ):
            raise BadRequest(
                f"input {spec.name!r}: shape {_fmt(array.shape)} does not match the model's "
                f"{_fmt(spec.shape)} (-1 = any)"
            )
    if len(tensors) > 1 and signature.batchable:
        batch = {int(a.shape[0]) for a in tensors.values()}
        if len(batch) > 1:
            raise BadRequest(
                "inputs disagree on the batch (first) dimension: "
                + ", ".join(f"{n}={int(a.shape[0])}" for n, a in tensors.items())
            )
