"""Byte-level text for causal language models (the embedded default data for Stack-Wise).

Default corpus: the standard library's public top-level ``*.py`` sources up to ``max_bytes`` (nothing is
downloaded); ``data.path`` reads a user's file instead. The last ``val_fraction`` is held out. Item ``i`` is the
fixed window at byte ``i * seq_len``, the same in every epoch, so the activation cache can key on ``i``.
"""

from __future__ import annotations

import hashlib
import math
import os
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch.utils.data import Dataset


class TextDataError(ValueError):
    """A text corpus that cannot be used, with what to do about it."""


@dataclass
class TextConfig:
    """Hydra schema of ``data=text``."""

    _target_: str = "waypoint.data.text.TextCorpus"
    path: Optional[str] = None
    max_bytes: int = 1_000_000
    val_fraction: float = 0.05
    val_items: int = 64
    batch_size: int = 16
    max_items: Optional[int] = None
    num_workers: int = 0  # DataLoader worker processes; read by the trainer, not passed to the data class


def stdlib_corpus(max_bytes: int) -> tuple[bytes, list[str]]:
    """The embedded corpus: sorted top-level stdlib ``*.py`` files (no leading ``_``) up to ``max_bytes``."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    names = sorted(n for n in os.listdir(stdlib) if n.endswith(".py") and not n.startswith("_")) if stdlib.is_dir() else []
    if not names:
        raise TextDataError(f"no Python sources found in the standard library folder '{stdlib}'; pass data.path=<a text file>.")
    chunks, used, total = [], [], 0
    for name in names:
        if total >= max_bytes:
            break
        data = (stdlib / name).read_bytes()
        chunks.append(data)
        used.append(name)
        total += len(data)
    return b"".join(chunks)[:max_bytes], used


def unigram_entropy(data: np.ndarray) -> float:
    """Shannon entropy of the byte histogram of ``data``, in bits per byte."""
    counts = np.bincount(data, minlength=256).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def unigram_cross_entropy(train: np.ndarray, held_out: np.ndarray) -> float:
    """Bits per byte of ``held_out`` under the add-one-smoothed byte histogram of ``train``."""
    counts = np.bincount(train, minlength=256).astype(np.float64) + 1.0
    logp = np.log2(counts / counts.sum())
    return float(-logp[held_out].mean())


class TextWindows(Dataset):
    """Fixed windows of ``seq_len + 1`` bytes; ``__getitem__`` takes ``(epoch, index)`` or a plain index."""

    def __init__(self, data: torch.Tensor, seq_len: int, length: int) -> None:
        self.data, self.seq_len, self.length = data, seq_len, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        index = int(key[1]) if isinstance(key, (tuple, list)) else int(key)
        if not 0 <= index < self.length:
            raise IndexError(f"text window {index} out of range 0..{self.length - 1}")
        start = index * self.seq_len
        return {"index": torch.tensor(index), "tokens": self.data[start : start + self.seq_len + 1].long()}


class TextCorpus:
    """Data source of bytes for causal language modelling (``data=text``)."""

    kind = "text"

    def __init__(
        self,
        path: Optional[str] = None,
        max_bytes: int = 1_000_000,
        val_fraction: float = 0.05,
        val_items: int = 64,
        batch_size: int = 16,
        max_items: Optional[int] = None,
    ) -> None:
        if path:
            file = Path(path).expanduser()
            if not file.is_file():
                raise TextDataError(
                    f"data.path '{file}' is not a file; pass data.path=<a text file> or leave it unset for the embedded corpus."
                )
            raw, self.files = file.read_bytes()[:max_bytes], [str(file)]
        else:
            raw, self.files = stdlib_corpus(max_bytes)
        if not 0.0 < val_fraction < 1.0:
            raise TextDataError(f"data.val_fraction must be between 0 and 1, got {val_fraction}.")
        self.bytes = np.frombuffer(raw, dtype=np.uint8).copy()
        self.digest = hashlib.sha256(raw).hexdigest()
        n_val = int(len(raw) * val_fraction)
        self.train_bytes = torch.from_numpy(self.bytes[: len(raw) - n_val].copy())
        self.val_bytes = torch.from_numpy(self.bytes[len(raw) - n_val :].copy())
        self.val_items, self.batch_size, self.max_items = int(val_items), int(batch_size), max_items

    def limit(self, n: int) -> int:
        """Apply ``max_items`` to a dataset length."""
        return n if self.max_items is None else max(1, min(n, int(self.max_items)))

    def _windows(self, data: torch.Tensor, seq_len: int, cap: Optional[int], split: str) -> TextWindows:
        n = (len(data) - 1) // seq_len
        if n < 1:
            raise TextDataError(
                f"the {split} split holds {len(data)} bytes, too few for one window of {seq_len + 1}; "
                "use a longer text, a larger data.val_fraction or a shorter model.seq_len."
            )
        return TextWindows(data, seq_len, self.limit(n if cap is None else min(n, cap)))

    def train_dataset(self, seq_len: int) -> Dataset:
        """Training windows indexed by ``(epoch, index)``."""
        return self._windows(self.train_bytes, seq_len, None, "training")

    def val_dataset(self, seq_len: int) -> Dataset:
        """Held-out windows indexed by a plain int."""
        return self._windows(self.val_bytes, seq_len, self.val_items, "validation")

    def unigram_entropy(self) -> float:
        """Entropy of the whole corpus's byte histogram in bits per byte (the no-context baseline)."""
        return unigram_entropy(self.bytes)

    def unigram_val_bpb(self) -> float:
        """Bits per byte a train-split unigram model scores on the validation split."""
        return unigram_cross_entropy(self.train_bytes.numpy(), self.val_bytes.numpy())


def bits_per_byte(mean_nats: float) -> float:
    """Convert a mean cross-entropy in nats per byte to bits per byte."""
    return mean_nats / math.log(2)
