"""Embeddings computed without litegate, to check litegate's against."""

from __future__ import annotations

from importlib import resources

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from litegate.demo import demo_model_path


def reference_embeddings(texts: list[str]) -> tuple[np.ndarray, int]:
    """Independent of litegate: raw tokenizer, one text per session.run, numpy pooling."""
    tok = Tokenizer.from_file(
        str(resources.files("litegate.inference") / "data" / "minilm-tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_length=256)
    session = ort.InferenceSession(str(demo_model_path()), providers=["CPUExecutionProvider"])
    vectors, tokens = [], 0
    for text in texts:
        enc = tok.encode(text)
        feeds = {
            "input_ids": np.array([enc.ids], np.int64),
            "attention_mask": np.array([enc.attention_mask], np.int64),
            "token_type_ids": np.array([enc.type_ids], np.int64),
        }
        hidden = session.run(None, feeds)[0][0]
        pooled = hidden.mean(axis=0)
        vectors.append(pooled / np.linalg.norm(pooled))
        tokens += len(enc.ids)
    return np.array(vectors), tokens
