"""Panels are thin views: no panel module imports torch, transformers or peft."""

import ast
from pathlib import Path

import pytest

PANELS = sorted((Path(__file__).parents[1] / "lf_widgets" / "panels").glob("*.py"))


@pytest.mark.parametrize("source", PANELS, ids=[p.name for p in PANELS])
def test_panel_imports_no_model_library(source):
    tree = ast.parse(source.read_text())
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not {name.split(".")[0] for name in names} & {"torch", "transformers", "peft"}


def test_every_panel_is_checked():
    assert {"monitor.py", "stepper.py", "rating.py", "abtest.py"} <= {p.name for p in PANELS}
