"""``python -m waypoint`` runs the ``waypoint`` command."""

from waypoint.cli import main

raise SystemExit(main())
