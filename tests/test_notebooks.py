"""Every notebook runs top to bottom: on the tiny model (fast), and the quickstart on the real one.

A cell that raises fails the run (nbclient raises ``CellExecutionError``). A cell that writes to
stderr fails too: a dependency's warning or a progress bar is a red block in the person's cell.
On the default model the quickstart's promise is checked: the stand-in's blind A/B test picks
the tuned model.
"""

import shutil
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))


def run_notebook(path: Path, workdir: Path, env: dict[str, str], monkeypatch) -> nbformat.NotebookNode:
    """Execute a copy of the notebooks folder in ``workdir`` (so nothing is written to the repo)."""
    shutil.copytree(path.parent, workdir, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("*.sqlite*", "exports", ".ipynb_checkpoints"))
    for key, value in env.items():
        monkeypatch.setenv(key, value)  # the kernel inherits this process's environment
    nb = nbformat.read(workdir / path.name, as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(workdir)}}).execute()  # raises on an error
    return nb


def stderr_outputs(nb) -> list[tuple[int, str]]:
    """(cell number, text) of every stderr stream output."""
    return [(i, o.get("text", "")) for i, c in enumerate(nb.cells) if c.cell_type == "code"
            for o in c.get("outputs", []) if o.output_type == "stream" and o.get("name") == "stderr"]


def test_there_are_notebooks():
    assert any(p.name == "01_quickstart.ipynb" for p in NOTEBOOKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_on_tiny_model_without_stderr(path, tmp_path, monkeypatch):
    nb = run_notebook(path, tmp_path, {"LF_WIDGETS_MODEL": "tiny"}, monkeypatch)
    assert stderr_outputs(nb) == []


def test_stderr_outputs_are_found():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x"), nbformat.v4.new_code_cell("y")])
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="fine\n"),
                           nbformat.v4.new_output("stream", name="stderr", text="FutureWarning\n")]
    assert stderr_outputs(nb) == [(1, "FutureWarning\n")]


@pytest.mark.slow
def test_quickstart_on_default_model_shows_the_effect_of_training(tmp_path, monkeypatch,
                                                                  default_model_cache):
    from lf_widgets.ab import votes_frame
    from lf_widgets.store import FeedbackStore

    path = next(p for p in NOTEBOOKS if p.name == "01_quickstart.ipynb")
    t0 = time.time()
    nb = run_notebook(path, tmp_path, {"LF_WIDGETS_MODEL": "", "LF_WIDGETS_CACHE": str(default_model_cache)},
                      monkeypatch)
    print(f"quickstart on the default model: {time.time() - t0:.1f} s")
    assert stderr_outputs(nb) == []
    store = FeedbackStore(tmp_path / "lf_feedback.sqlite")
    try:
        votes = votes_frame(store)
    finally:
        store.close()
    winners = votes.loc[votes["annotator"] == "scripted-demo", "winner"].tolist()
    print("the stand-in's A/B votes:", winners)
    assert len(winners) == 6
    assert winners.count("tuned") > winners.count("base")  # what the notebook says it shows


@pytest.mark.slow
def test_ab_testing_notebook_on_default_model_shows_the_tuned_model_ahead(tmp_path, monkeypatch,
                                                                          default_model_cache):
    """Notebook 04 says the stand-in ("the shorter answer wins") picks the tuned side more often."""
    from lf_widgets.ab import votes_frame
    from lf_widgets.store import FeedbackStore

    path = next(p for p in NOTEBOOKS if p.name == "04_ab_testing.ipynb")
    nb = run_notebook(path, tmp_path, {"LF_WIDGETS_MODEL": "", "LF_WIDGETS_CACHE": str(default_model_cache)},
                      monkeypatch)
    assert stderr_outputs(nb) == []
    store = FeedbackStore(tmp_path / "ab_testing.sqlite")
    try:
        votes = votes_frame(store)
    finally:
        store.close()
    base_vs_tuned = votes[[{a, b} == {"base", "tuned"} for a, b in zip(votes["left"], votes["right"])]]
    winners = base_vs_tuned["winner"].tolist()
    print("the stand-in's base-vs-tuned votes:", winners)
    assert len(winners) == 6
    assert winners.count("tuned") > winners.count("base")


@pytest.mark.slow
@pytest.mark.timeout(2400)  # a whole notebook on the real model: 18 min seen at load 7-10
def test_critiques_notebook_on_default_model_teaches_the_opening_phrase(tmp_path, monkeypatch,
                                                                        default_model_cache):
    """Notebook 05 says: critiques and accepted revisions alone (no typed answer) teach the model
    to open with "Ahoy!" on held-out questions it answered otherwise before."""
    import ast

    from lf_widgets.store import FeedbackStore

    path = next(p for p in NOTEBOOKS if p.name == "05_learning_from_critiques.ipynb")
    t0 = time.time()
    nb = run_notebook(path, tmp_path, {"LF_WIDGETS_MODEL": "", "LF_WIDGETS_CACHE": str(default_model_cache)},
                      monkeypatch)
    print(f"notebook 05 on the default model: {time.time() - t0:.1f} s")
    assert stderr_outputs(nb) == []
    source = next(c.source for c in nb.cells if c.cell_type == "code" and "HELD_OUT = [" in c.source)
    held_out = ast.literal_eval(source.split("HELD_OUT = ", 1)[1].split("\n\n", 1)[0])
    store = FeedbackStore(tmp_path / "critiques.sqlite")
    try:
        samples = store.samples()
        corrections = store.current_events(kinds=["correction"])
    finally:
        store.close()
    assert len(corrections) > 0 and all(m["via"] == "revision" for m in corrections["meta"])
    answers = samples[samples["prompt"].isin(held_out)]
    before = answers[answers["adapter_step"].isna()]
    after = answers[answers["adapter_step"].notna()]
    assert len(before) == len(after) == len(held_out)
    hits = [int(df["text"].str.lstrip().str.startswith("Ahoy!").sum()) for df in (before, after)]
    print("held-out answers opening with 'Ahoy!', before and after:", hits)
    assert hits[1] > hits[0] and hits[1] >= len(held_out) // 2  # "most", as the notebook says
