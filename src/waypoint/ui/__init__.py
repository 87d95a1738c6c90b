"""``waypoint ui``: a local web interface over the checkpoint manager (Gradio).

The view models (``catalog``, ``runs``, ``detail``, ``compare``, ``actions``, ``charts``) are pure functions of
the manager's API and the run's tracking files; only ``app`` (layout), ``handlers`` (events) and ``serve`` import
Gradio, so the view models work without the ``ui`` extra.
"""

from .errors import ActionRefusedError, PathRefusedError, UIError, UnsafeBindError

__all__ = ["ActionRefusedError", "PathRefusedError", "UIError", "UnsafeBindError"]
