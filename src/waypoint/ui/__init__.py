"""``waypoint ui``: a local web interface over the checkpoint manager (Gradio).

The view models (``catalog``, ``runs``, ``detail``, ``compare``, ``actions``, ``charts``) are pure functions of
the manager's public API and of the run directory's tracking files; ``app`` lays them out in Gradio,
``handlers`` connects their events to the view models and ``serve`` starts it. Only ``app``, ``handlers`` and
``serve`` import Gradio, so the view models work (and are tested) without the ``ui`` extra.
"""

from .errors import ActionRefusedError, PathRefusedError, UIError, UnsafeBindError

__all__ = ["ActionRefusedError", "PathRefusedError", "UIError", "UnsafeBindError"]
