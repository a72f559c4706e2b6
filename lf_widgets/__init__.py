"""lf_widgets: teach a language model from your own feedback, live, inside a Jupyter notebook.

>>> import lf_widgets as lfw
>>> s = lfw.Session()            # offline default model, ./lf_feedback.sqlite   # doctest: +SKIP
>>> s.rate(["Write a haiku about rain"], n=4)                                    # doctest: +SKIP
"""

from .store import FeedbackStore
from .session import Sample, Session

__all__ = ["Session", "Sample", "FeedbackStore", "__version__"]
__version__ = "0.1.0"
