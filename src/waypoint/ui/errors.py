"""The web interface's errors: one hierarchy under ``UIError``; each message is one sentence for people."""

from __future__ import annotations


class UIError(Exception):
    """Base class of the web interface's errors."""


class PathRefusedError(UIError):
    """A run, checkpoint or path outside the roots the interface was started on (or not a run at all)."""


class ActionRefusedError(UIError):
    """A write action that was refused and changed nothing (protected checkpoint, lock held, not confirmed)."""


class UnsafeBindError(UIError):
    """A listening address that would expose the interface without authentication."""
