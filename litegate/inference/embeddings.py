"""Sentence embeddings from a local ONNX encoder: tokenize, mean-pool, L2-normalise."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from litegate.errors import BadRequest
from litegate.inference.dtypes import Tensor

if TYPE_CHECKING:  # tokenizers is imported only when a tokenizer is loaded
    from tokenizers import Tokenizer

BUILTIN_PREFIX = "builtin:"
BUILTIN_TOKENIZERS = {"minilm": "minilm-tokenizer.json"}
DEFAULT_MAX_LENGTH = 256
Row = tuple[list[int], list[int]]
"""One item's token ids and type ids, unpadded."""


def tokenizer_path(ref: str) -> Path:
    """``builtin:minilm`` -> the packaged file; anything else is a filesystem path."""
    if ref.startswith(BUILTIN_PREFIX):
        key = ref[len(BUILTIN_PREFIX):]
        if key not in BUILTIN_TOKENIZERS:
            raise BadRequest(f"unknown builtin tokenizer {key!r}")
        return Path(str(resources.files("litegate.inference") / "data" / BUILTIN_TOKENIZERS[key]))
    return Path(ref)


@dataclass(frozen=True, slots=True)
class EmbeddingTokenizer:
    """Texts (or token ids) -> unpadded rows -> padded int64 arrays, as the encoder takes."""

    tokenizer: Tokenizer
    max_length: int
    pad_id: int = 0
    pad_to_multiple_of: int = 8
    """Widths are rounded up to this, so batches of similar texts share one shape."""

    @classmethod
    def load(cls, ref: str, *, max_length: int = DEFAULT_MAX_LENGTH,
             pad_to_multiple_of: int | None = 8) -> EmbeddingTokenizer:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(tokenizer_path(ref)))
        padding = tok.padding or {}
        tok.no_padding()  # padding is ours: rows of one run are padded together
        tok.enable_truncation(max_length=max_length)
        return cls(tok, max_length, int(padding.get("pad_id", 0)), pad_to_multiple_of or 1)

    def rows(self, items: Sequence[str | Sequence[int]]) -> list[Row]:
        """Token ids and type ids per item, unpadded: texts are tokenized in one
        ``encode_batch`` (Rust, without the GIL); id lists (see :meth:`check_ids`) kept."""
        texts = [t for t in items if isinstance(t, str)]
        encoded = iter(self.tokenizer.encode_batch(texts) if texts else ())
        out: list[Row] = []
        for item in items:
            if isinstance(item, str):
                e = next(encoded)
                out.append((e.ids, e.type_ids))
            else:
                out.append((list(item), [0] * len(item)))
        return out

    def check_ids(self, items: Sequence[str | Sequence[int]]) -> None:
        """400 unless every token-id list fits the model (length, vocabulary)."""
        vocab = self.tokenizer.get_vocab_size()
        for item in items:
            if isinstance(item, str):
                continue
            if len(item) > self.max_length:
                raise BadRequest(f"an input has {len(item)} tokens; this model takes at most "
                                 f"{self.max_length}", code="invalid_input")
            if any(not 0 <= t < vocab for t in item):
                raise BadRequest(f"token ids must be in [0, {vocab})", code="invalid_input")

    def pad(self, rows: Sequence[Row]) -> dict[str, npt.NDArray[np.int64]]:
        """int64 ``input_ids``, ``attention_mask``, ``token_type_ids`` padded to the longest
        row (rounded up to ``pad_to_multiple_of``)."""
        longest = max((len(ids) for ids, _ in rows), default=0)
        width = -(-longest // self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        types = np.zeros((len(rows), width), dtype=np.int64)
        for i, (ids, type_ids) in enumerate(rows):
            input_ids[i, :len(ids)] = ids
            mask[i, :len(ids)] = 1
            types[i, :len(type_ids)] = type_ids
        return {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": types}

    def encode(self, items: Sequence[str | Sequence[int]]) -> dict[str, npt.NDArray[np.int64]]:
        """:meth:`rows` then :meth:`pad`: one padded batch."""
        return self.pad(self.rows(items))


def mean_pool(hidden: Tensor, mask: npt.NDArray[np.int64], *, normalize: bool = True
              ) -> npt.NDArray[np.float32]:
    """Mean over tokens where ``mask`` is 1, then L2 normalisation (sentence-transformers)."""
    m = mask.astype(np.float32)[..., None]
    summed: npt.NDArray[np.float32] = (hidden.astype(np.float32) * m).sum(axis=1)
    pooled: npt.NDArray[np.float32] = summed / np.clip(m.sum(axis=1), 1e-9, None)
    if normalize:
        pooled = pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
    return pooled
