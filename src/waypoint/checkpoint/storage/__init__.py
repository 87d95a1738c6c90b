"""Where checkpoint bytes live: one ``Backend`` interface (``base``), a local directory (``local``) and any fsspec
URL such as ``s3://bucket/prefix`` (``remote``). ``backend_for`` picks one from a checkpoints root."""

from __future__ import annotations

import os

from .base import Backend, BackendError, Capabilities, Lease, LeaseLostError, NewObject, Reader
from .local import LocalBackend


def is_url(root: str | os.PathLike) -> bool:
    """Whether a checkpoints root names an fsspec URL of another file system (``s3://...``, ``memory://...``)."""
    text = str(root)
    if "://" not in text:
        return False
    return text.split("://", 1)[0] not in ("file", "local")


def local_path(root: str | os.PathLike) -> str:
    """A ``file://`` URL as a plain path; anything else unchanged."""
    text = str(root)
    for scheme in ("file://", "local://"):
        if text.startswith(scheme):
            return text[len(scheme) :]
    return text


def backend_for(root: str | os.PathLike | Backend) -> Backend:
    """The backend a checkpoints root names: an fsspec URL, or a local directory (a backend is returned as is)."""
    if isinstance(root, Backend):
        return root
    if is_url(root):
        from .remote import FsspecBackend

        return FsspecBackend(str(root))
    return LocalBackend(local_path(root))


__all__ = [
    "Backend",
    "BackendError",
    "Capabilities",
    "Lease",
    "LeaseLostError",
    "LocalBackend",
    "NewObject",
    "Reader",
    "backend_for",
    "is_url",
    "local_path",
]
