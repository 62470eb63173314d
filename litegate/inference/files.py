"""A registered model's files: the ``.onnx`` plus any external-data files beside it.

The digest covers them all, so swapping a weights file is detected like swapping the
model. Locations come from the model file and are checked before any is opened: only
plain relative paths inside the model's directory are accepted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Protocol

from litegate.errors import BadRequest
from litegate.progress import Progress

if TYPE_CHECKING:  # onnx is imported only when a model file is read
    from onnx import GraphProto, TensorProto

_CHUNK = 1 << 20


class InvalidModelFile(BadRequest):
    """The file set is not usable (missing or unsafe external data)."""


class _Digest(Protocol):
    def update(self, data: bytes, /) -> None: ...


def _tensors(graph: GraphProto) -> Iterator[TensorProto]:
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _tensors(attr.g)
            for sub in attr.graphs:
                yield from _tensors(sub)


def external_data(path: Path) -> list[str]:
    """Relative locations of the external-data files ``path`` refers to (sorted, unique)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # DecodeError and friends: not a model; the checker says why
        return []
    locations: set[str] = set()
    for tensor in _tensors(model.graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        rel = PurePosixPath(location)
        if (not location or rel.is_absolute() or "\\" in location or ":" in location
                or any(part in ("..", "") for part in rel.parts)):
            raise InvalidModelFile(
                f"{path.name}: external data location {location!r} must be a plain path "
                "relative to the model file")
        locations.add(str(rel))
    missing = [loc for loc in sorted(locations) if not (path.parent / loc).is_file()]
    if missing:
        raise InvalidModelFile(
            f"{path.name}: external data file {missing[0]!r} is missing; keep it beside the "
            "model file (register the model from its own directory)")
    return sorted(locations)


def _feed(digest: _Digest, path: Path) -> None:
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)


def model_digest(path: Path, extra: list[str] | None = None) -> str:
    """SHA-256 of the model file, then of each external-data file in ``extra`` order.

    Without external data this is the plain SHA-256 of the file (``sha256sum``).
    """
    digest = hashlib.sha256()
    _feed(digest, path)
    for location in extra if extra is not None else external_data(path):
        digest.update(location.encode())
        _feed(digest, path.parent / location)
    return digest.hexdigest()


def copy_model(source: Path, target_dir: Path, name: str,
               progress: Progress | None = None) -> tuple[str, int]:
    """Copy the model (as ``name``) and its external data; return (digest, total bytes).
    ``progress("copy", bytes done, bytes in all)`` follows the copy chunk by chunk."""
    locations = external_data(source)
    target_dir.mkdir(parents=True, exist_ok=True)
    pairs = [(source, target_dir / name)] + [
        (source.parent / loc, target_dir / loc) for loc in locations]
    size = sum(src.stat().st_size for src, _ in pairs)
    if progress is not None:
        progress("copy", 0, size, source.name)
    total = 0
    for src, dst in pairs:
        dst.parent.mkdir(parents=True, exist_ok=True)
        partial = dst.with_name(dst.name + ".part")
        with open(src, "rb") as fin, open(partial, "wb") as fout:
            for chunk in iter(lambda: fin.read(_CHUNK), b""):
                fout.write(chunk)
                total += len(chunk)
                if progress is not None:
                    progress("copy", total, max(size, total), source.name)
        partial.replace(dst)
    return model_digest(target_dir / name, locations), total
