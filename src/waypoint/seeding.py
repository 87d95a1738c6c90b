"""Seeded generators: every random draw in Waypoint is a function of named parts (seed, purpose, epoch, index).

A leaf module (standard library and torch only) so that both the data sources and the model families
draw from it without importing each other.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch


def sample_generator(*parts: Any) -> torch.Generator:
    """A CPU generator seeded by a stable hash of ``parts`` (e.g. ``(seed, "train", epoch, index)``)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    gen = torch.Generator()
    gen.manual_seed(int.from_bytes(digest, "little") & ((1 << 63) - 1))
    return gen
