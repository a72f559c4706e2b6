"""The quickstart as a person runs it (Run All in JupyterLab and Notebook 7): no red blocks.

A dependency's warning (``FutureWarning: is_gradient_checkpointing is deprecated`` from peft, a
progress bar, a logging line) lands in the person's cell as a stderr output area. The library
filters the known ones where it triggers them; this checks the page, not a pytest filter: after
``notebook:run-all-cells`` no cell has a stderr output, in the notebook model or in the DOM.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

NOTEBOOKS = Path(__file__).parents[2] / "notebooks"
ARTIFACTS = Path(__file__).parent / "artifacts"
TINY = {"LF_WIDGETS_MODEL": "tiny"}
STDERR_OUTPUTS = """() => window.jupyterapp.shell.currentWidget.content.widgets.flatMap((c, i) =>
    c.model.type !== 'code' ? [] : c.model.outputs.toJSON()
        .filter(o => o.output_type === 'stream' && o.name === 'stderr')
        .map(o => ({cell: i, text: [].concat(o.text).join('')})))"""
STDERR_IN_PAGE = "[data-mime-type='application/vnd.jupyter.stderr']"


@pytest.mark.parametrize("app", ["lab", "notebook"])
def test_quickstart_run_all_writes_nothing_to_stderr(open_notebook, app):
    page = open_notebook(NOTEBOOKS / "01_quickstart.ipynb", app=app, env=TINY, run=False)
    shutil.copytree(NOTEBOOKS / "data", page.lfw.path.parent / "data", dirs_exist_ok=True)
    result = page.lfw.run_all(timeout_s=600)
    assert result["ok"], result["errors"]
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"quickstart-{app}.png"), full_page=True)
    assert page.evaluate(STDERR_OUTPUTS) == []
    assert page.locator(STDERR_IN_PAGE).count() == 0
    # the check is not blind: a cell that writes to stderr shows up in both places
    page.evaluate("""() => { const nb = window.jupyterapp.shell.currentWidget.content;
        nb.activeCellIndex = nb.widgets.length - 1; }""")
    page.evaluate("""() => window.jupyterapp.commands.execute('notebook:insert-cell-below')""")
    cell = page.evaluate("""() => { const nb = window.jupyterapp.shell.currentWidget.content;
        nb.activeCell.model.sharedModel.setSource("import sys; print('control', file=sys.stderr)");
        return nb.activeCellIndex; }""")
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-cell')")
    page.locator(STDERR_IN_PAGE).first.wait_for()
    assert [o["cell"] for o in page.evaluate(STDERR_OUTPUTS)] == [cell]
