"""Thin ipywidgets views over a :class:`lf_widgets.Session` (no torch imported here)."""

from .monitor import TrainingMonitor
from .rating import RatingPanel
from .stepper import StepperPanel

__all__ = ["RatingPanel", "StepperPanel", "TrainingMonitor"]
