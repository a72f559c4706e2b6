"""Thin ipywidgets views over a :class:`lf_widgets.Session` (no torch imported here)."""

from .critiques import CritiqueQueuePanel
from .monitor import TrainingMonitor
from .rating import RatingPanel
from .stepper import StepperPanel

__all__ = ["CritiqueQueuePanel", "RatingPanel", "StepperPanel", "TrainingMonitor"]
