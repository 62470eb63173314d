"""Sentence embeddings from a local ONNX encoder: tokenize, mean-pool, L2-normalise."""

from __future__ import annotations

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
    tokenizer: Tokenizer
    max_length: int

    @classmethod
    def load(cls, ref: str, *, max_length: int = DEFAULT_MAX_LENGTH,
             pad_to_multiple_of: int | None = 8) -> EmbeddingTokenizer:
        """Pad to the longest text (rounded up, so concurrent requests share batches)."""
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(tokenizer_path(ref)))
        padding = tok.padding or {}
        tok.no_padding()
        tok.enable_padding(pad_id=int(padding.get("pad_id", 0)),
                           pad_token=str(padding.get("pad_token", "[PAD]")),
                           pad_to_multiple_of=pad_to_multiple_of)
        tok.enable_truncation(max_length=max_length)
        return cls(tok, max_length)

    def encode(self, texts: list[str]) -> dict[str, npt.NDArray[np.int64]]:
        """int64 ``input_ids``, ``attention_mask``, ``token_type_ids`` padded to the longest."""
        encodings = self.tokenizer.encode_batch(texts)
        return {
            "input_ids": np.asarray([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.asarray([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.asarray([e.type_ids for e in encodings], dtype=np.int64),
        }


    def encode_ids(self, ids: list[list[int]]) -> dict[str, npt.NDArray[np.int64]]:
        """The same arrays as :meth:`encode` from token ids a client tokenized itself."""
        vocab = self.tokenizer.get_vocab_size()
        for row in ids:
            if len(row) > self.max_length:
                raise BadRequest(f"an input has {len(row)} tokens; this model takes at most "
                                 f"{self.max_length}", code="invalid_input")
            if any(not 0 <= t < vocab for t in row):
                raise BadRequest(f"token ids must be in [0, {vocab})", code="invalid_input")
        longest = max(len(row) for row in ids)
        multiple = (self.tokenizer.padding or {}).get("pad_to_multiple_of") or 1
        width = -(-longest // multiple) * multiple
        pad_id = int((self.tokenizer.padding or {}).get("pad_id", 0))
        input_ids = np.full((len(ids), width), pad_id, dtype=np.int64)
        mask = np.zeros((len(ids), width), dtype=np.int64)
        for i, row in enumerate(ids):
            input_ids[i, :len(row)] = row
            mask[i, :len(row)] = 1
        return {"input_ids": input_ids, "attention_mask": mask,
                "token_type_ids": np.zeros_like(input_ids)}


def mean_pool(hidden: Tensor, mask: npt.NDArray[np.int64], *, normalize: bool = True
              ) -> npt.NDArray[np.float32]:
    """Mean over tokens where ``mask`` is 1, then L2 normalisation (sentence-transformers)."""
    m = mask.astype(np.float32)[..., None]
    summed: npt.NDArray[np.float32] = (hidden.astype(np.float32) * m).sum(axis=1)
    pooled: npt.NDArray[np.float32] = summed / np.clip(m.sum(axis=1), 1e-9, None)
    if normalize:
        pooled = pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
    return pooled
