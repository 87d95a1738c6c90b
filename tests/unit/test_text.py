"""Byte corpus: the embedded stdlib corpus, fixed windows, clear errors, unigram entropy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from waypoint.data.text import TextCorpus, TextDataError, unigram_entropy


def test_embedded_corpus_is_deterministic_stdlib_source():
    a, b = TextCorpus(max_bytes=50_000), TextCorpus(max_bytes=50_000)
    assert a.digest == b.digest and len(a.bytes) == 50_000
    assert a.files == sorted(a.files) and all(f.endswith(".py") for f in a.files)


def test_training_windows_are_fixed_across_epochs():
    ds = TextCorpus(max_bytes=20_000).train_dataset(seq_len=64)
    first, later = ds[(0, 7)], ds[(5, 7)]
    assert torch.equal(first["tokens"], later["tokens"]) and int(first["index"]) == 7
    assert first["tokens"].shape == (65,) and torch.equal(ds[(0, 8)]["tokens"][0], first["tokens"][64])


def test_user_file_and_validation_split(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes(bytes(range(256)) * 40)
    corpus = TextCorpus(path=str(path), val_fraction=0.25, val_items=3)
    assert len(corpus.val_bytes) == 2560 and len(corpus.val_dataset(32)) == 3


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(TextDataError, match="is not a file"):
        TextCorpus(path=str(tmp_path / "missing.txt"))


def test_too_short_text_is_a_clear_error(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes(b"abc" * 10)
    with pytest.raises(TextDataError, match="too few for one window"):
        TextCorpus(path=str(path)).val_dataset(64)


def test_unigram_entropy_of_a_uniform_histogram_is_eight_bits():
    assert math.isclose(unigram_entropy(np.arange(256, dtype=np.uint8).repeat(3)), 8.0)
    assert math.isclose(unigram_entropy(np.array([1, 1, 2, 2], dtype=np.uint8)), 1.0)
