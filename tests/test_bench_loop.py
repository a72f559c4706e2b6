"""The loop benchmark runs end to end on the tiny model (``--quick``) and prints its table.

No speed or quality assertions: the tiny random model learns nothing worth measuring, and
timings flake on shared machines. ``benchmarks/bench_loop.py`` itself prints the figures.
The quick run includes one language-feedback condition (``ahoy:critique+hindsight``): critiques,
``suggest_revisions``, accepting a revision, hindsight training and goal-conditioned answers all
run; its log must hold the accepted revisions as corrections with their provenance.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_loop.py"
RUNS = ("ahoy:correction", "short:preference:noisy", "ahoy:critique+hindsight")


@pytest.mark.timeout(1500)  # 3 runs x 4 rounds on the tiny model: > 600 s on a loaded 2-core machine
def test_bench_loop_quick_prints_curves_table_and_figure(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    out_html = tmp_path / "curves.html"
    logs = tmp_path / "logs"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(out_html),
                           "--keep", str(logs)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1400,
                          check=False)
    out = proc.stdout
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out[-3000:]}\n{proc.stderr[-3000:]}"
    # the per-round curve of every run, 4 rounds each
    for run in RUNS:
        rounds = re.findall(rf"^\s+{re.escape(run)}\s+round (\d): judged\s+(\d+)", out, re.MULTILINE)
        assert [r for r, _ in rounds] == ["1", "2", "3", "4"], out
        assert [int(j) for _, j in rounds] == [8, 16, 32, 64], out
    assert re.search(r"^run\s+base\s+@8\s+@16\s+@32\s+@64\s+best\s+drop\s+s/round\s+cap base\s+"
                     r"cap tuned\s+change\s+revised\s+sound$", out, re.MULTILINE), out
    for run in RUNS:
        assert re.search(rf"^{re.escape(run)}\s+\d+\.\d%(\s+\d+\.\d%){{5}}\s+-?\d+\s+\d+\.\d"
                         rf"\s+\d+\.\d{{4}}\s+\d+\.\d{{4}}\s+[+-]\d+\.\d\d%", out, re.MULTILINE), out
    assert "capability: NLL per token of 40 general texts" in out
    # the critique run: its goal-conditioned base, and revisions offered and accepted. The
    # refiner forces the critique's quoted opening phrase, so even the tiny model's candidates
    # all start with "Ahoy!"; the annotator accepts those that still give the original answer
    # (at least "Ahoy! " + the answer itself, the "original+prefix" candidate, mostly).
    assert re.search(r"ahoy:critique\+hindsight\s+base\s+: judged\s+0\s+share\s+\d+\.\d%\s+"
                     r"\(goal \"Good: it starts with 'Ahoy!'\.\"\)", out), out
    row = re.search(r"^ahoy:critique\+hindsight\s.*\s(\d+)/(\d+)\s+\d+\.\d%$", out, re.MULTILINE)
    assert row and int(row[2]) > 0 and int(row[1]) > 0, out
    revisions = re.search(r"^ahoy:critique\+hindsight\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+"
                          r"\d+\.\d%\s+(\d+)\s+0\s+0\s+\d+\.\d\s+\S*prefix", out, re.MULTILINE)
    assert revisions, out
    offered, candidates, meeting, accepted, rejected = map(int, revisions.groups())
    assert (accepted, offered) == (int(row[1]), int(row[2])) and accepted + rejected == offered
    assert candidates == 3 * offered and meeting == candidates
    assert out_html.is_file() and "plotly" in out_html.read_text()
    # what the critique run wrote through the public verbs: no typed correction, only accepted
    # revisions (corrections with via="revision", the refiner, the critique and the strategy)
    from lf_widgets.store import FeedbackStore

    store = FeedbackStore(logs / "ahoy_critique_hindsight.sqlite")
    try:
        corrections = store.current_events(kinds=["correction"])
        critiques = store.current_events(kinds=["critique"])
    finally:
        store.close()
    assert len(corrections) == accepted
    assert set(critiques["value"]) <= {"Start your answer with 'Ahoy!'.", "Good: it starts with 'Ahoy!'."}
    for value, meta in zip(corrections["value"], corrections["meta"]):
        assert value.startswith("Ahoy!")
        assert meta["via"] == "revision" and meta["critique"] == "Start your answer with 'Ahoy!'."
        assert meta["refiner"].startswith("own") and "prefix" in meta["strategy"]
        assert meta["candidates"] == 3 and meta["candidate"] in (0, 1, 2)
