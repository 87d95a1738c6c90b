"""One error hierarchy and one exit-code table, for ``train.py`` and the ``waypoint`` command alike.

Every error meant for people is a ``WaypointError``: its message is one sentence saying what is wrong and what to
do, and its ``exit_code`` is what both entry points exit with. Anything else is a bug: exit 1, with its traceback
(in train.log for a run). This module imports nothing of Waypoint's: every package may raise these.

====  ==========================================================================================================
code  meaning
====  ==========================================================================================================
0     done (or already done; a check found nothing wrong)
1     a check failed (damage found), a save failed, the writer's lease was lost, or a bug (with its traceback)
2     bad configuration, argument, path or input: nothing was trained, nothing in the run directory changed
3     the loss became non-finite (the newest checkpoint still holds the last good state)
75    preempted: a stop signal saved a ``preempt`` checkpoint (EX_TEMPFAIL: run the same command to resume)
130   aborted by a second Ctrl-C (no save; committed checkpoints are intact)
141   the reader of the output went away (``waypoint ls RUN | head -1``), quietly
====  ==========================================================================================================
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NONFINITE = 3
EXIT_PREEMPTED = 75
EXIT_ABORTED = 130
EXIT_BROKEN_PIPE = 141


class WaypointError(Exception):
    """An error meant for people (one sentence); ``exit_code`` says how train.py and the CLI exit on it."""

    exit_code = EXIT_USAGE


class UserError(WaypointError):
    """A bad configuration, argument, path or input: exit 2, nothing changed."""

    exit_code = EXIT_USAGE


class FailureError(WaypointError):
    """Something that should have worked did not (damage found, a save failed, the lease was lost): exit 1."""

    exit_code = EXIT_FAILED
