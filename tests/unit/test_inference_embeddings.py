"""Tokenizer loading (packaged, offline) and mean pooling + L2 normalisation."""

from __future__ import annotations

import numpy as np
import pytest

from litegate.errors import BadRequest
from litegate.inference.embeddings import EmbeddingTokenizer, mean_pool, tokenizer_path


def test_builtin_tokenizer_is_packaged_with_its_notice() -> None:
    path = tokenizer_path("builtin:minilm")
    assert path.is_file() and path.stat().st_size > 400_000
    notice = (path.parent / "NOTICE.md").read_text()
    assert "Apache License, Version 2.0" in notice and "all-MiniLM-L6-v2" in notice
    with pytest.raises(BadRequest, match="unknown builtin tokenizer"):
        tokenizer_path("builtin:nope")


def test_encode_pads_to_longest_rounded_up_and_truncates() -> None:
    tok = EmbeddingTokenizer.load("builtin:minilm", max_length=12)
    enc = tok.encode(["Hello world", "one two three four five six seven eight nine ten eleven"])
    assert enc["input_ids"].dtype == np.int64
    assert enc["input_ids"].shape == (2, 16)  # 12 (truncated) rounded up to a multiple of 8
    assert enc["input_ids"][0][:4].tolist() == [101, 7592, 2088, 102]  # [CLS] hello world [SEP]
    assert enc["attention_mask"][0].sum() == 4 and enc["attention_mask"][1].sum() == 12
    assert not enc["token_type_ids"].any()


def test_mean_pool_ignores_padding_and_normalises() -> None:
    hidden = np.array([[[1.0, 0.0], [3.0, 4.0], [100.0, 100.0]]], np.float32)
    mask = np.array([[1, 1, 0]])
    pooled = mean_pool(hidden, mask, normalize=False)
    np.testing.assert_allclose(pooled, [[2.0, 2.0]])
    unit = mean_pool(hidden, mask)
    np.testing.assert_allclose(unit, [[2 ** -0.5, 2 ** -0.5]], rtol=1e-6)
    assert np.isfinite(mean_pool(hidden, np.zeros((1, 3), np.int64))).all()
