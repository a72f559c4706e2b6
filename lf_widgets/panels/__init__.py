"""Thin ipywidgets views over a :class:`lf_widgets.Session` (no torch imported here)."""

from .rating import RatingPanel

__all__ = ["RatingPanel"]
