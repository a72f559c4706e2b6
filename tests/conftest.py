"""Shared fixtures: a tiny random model built in-process (no download), sessions on temp stores."""

import pytest


@pytest.fixture(scope="session")
def tiny():
    """(model, tokenizer) of the tiny random Llama; shared, so tests must not train it."""
    from lf_widgets.models import tiny_model

    return tiny_model(seed=0)


@pytest.fixture
def session(tiny, tmp_path):
    from lf_widgets import Session

    s = Session(model=tiny, store=tmp_path / "feedback.sqlite", annotator="ann")
    yield s
    s.close()


@pytest.fixture
def fresh(tmp_path):
    """A session on its own tiny model (training changes it), store on disk."""
    from lf_widgets import Session
    from lf_widgets.models import tiny_model

    s = Session(tiny_model(seed=0), store=tmp_path / "fb.sqlite", annotator="ann")
    yield s
    s.close()


@pytest.fixture(scope="session")
def default_model_cache():
    """The cache folder holding the converted default model (converted once, ~20 s, if missing).

    It is the user's normal cache (``$LF_WIDGETS_CACHE`` or ``~/.cache/lf_widgets``), the same one
    ``make demo`` fills, so the suite converts at most once per machine.
    """
    from lf_widgets.models import cache_dir, prepare_default_model

    prepare_default_model()
    return cache_dir()
