"""The loop benchmark runs end to end on the tiny model (``--quick``) and prints its table.

No speed or quality assertions: the tiny random model learns nothing worth measuring, and
timings flake on shared machines. ``benchmarks/bench_loop.py`` itself prints the figures.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_loop.py"


def test_bench_loop_quick_prints_curves_table_and_figure(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    out_html = tmp_path / "curves.html"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(out_html)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
                          check=False)
    out = proc.stdout
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out[-3000:]}\n{proc.stderr[-3000:]}"
    # the per-round curve of every run, 4 rounds each
    for run in ("ahoy:correction", "short:preference:noisy"):
        rounds = re.findall(rf"^\s+{re.escape(run)}\s+round (\d): judged\s+(\d+)", out, re.MULTILINE)
        assert [r for r, _ in rounds] == ["1", "2", "3", "4"], out
        assert [int(j) for _, j in rounds] == [8, 16, 32, 64], out
    assert re.search(r"^run\s+base\s+@8\s+@16\s+@32\s+@64\s+best\s+drop\s+s/round\s+cap base\s+"
                     r"cap tuned\s+change", out, re.MULTILINE), out
    for run in ("ahoy:correction", "short:preference:noisy"):
        assert re.search(rf"^{re.escape(run)}\s+\d+\.\d%(\s+\d+\.\d%){{5}}\s+-?\d+\s+\d+\.\d"
                         rf"\s+\d+\.\d{{4}}\s+\d+\.\d{{4}}\s+[+-]\d+\.\d\d%", out, re.MULTILINE), out
    assert "capability: NLL per token of 40 general texts" in out
    assert out_html.is_file() and "plotly" in out_html.read_text()
