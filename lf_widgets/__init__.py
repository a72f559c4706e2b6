"""lf_widgets: teach a language model from your own feedback, live, inside a Jupyter notebook.

>>> import lf_widgets as lfw
>>> s = lfw.Session()            # offline default model, ./lf_feedback.sqlite   # doctest: +SKIP
>>> s.rate(["Write a haiku about rain"], n=4)                                    # doctest: +SKIP
"""

from .store import FeedbackStore
from .session import Sample, Session

from importlib.metadata import PackageNotFoundError, version as _version

__all__ = ["Session", "Sample", "FeedbackStore", "__version__"]
try:
    __version__ = _version("lf-widgets")  # one place for the version: pyproject.toml
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
