"""Waypoint: training that cannot lose work."""

__version__ = "0.1.0"
