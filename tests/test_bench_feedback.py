"""The feedback benchmark runs end to end (tiny model, few clicks and rounds).

No timing assertions: timings flake on shared machines. `benchmarks/bench_feedback.py` itself
prints the figures and whether each target is met.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_feedback.py"


def test_bench_feedback_quick_runs_and_prints_every_figure(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    out = proc.stdout
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out[-3000:]}\n{proc.stderr[-3000:]}"
    number = r"\d+\.\d+"
    assert re.search(rf"^\(a\) rating click -> committed, \d+ clicks: median {number} ms, p99", out,
                     re.MULTILINE), out
    for label in ("cold \\(1st call\\)", "warm \\(median\\)"):
        # "none": every sample finished before the first 0.2 s partial-text update (tiny model)
        assert re.search(rf"^\s+{label}\s+returned {number} s · first token {number} s · first "
                         rf"partial text ({number} s|none) · first sample {number} s", out,
                         re.MULTILINE), out
    assert re.search(r"time-to-first token: .* target <= 1 s: (met|MISSED)", out), out
    assert re.search(r"time-to-first visible sample: .* target <= 2 s: (met|MISSED)", out), out
    for name in ("stream_completions", "session.generate"):
        assert re.search(rf"^\s+{name}\s+{number} ratio {number}\s+target >= 0.95: (met|MISSED)",
                         out, re.MULTILINE), out
    assert "same token ids in all three: yes" in out
    assert re.search(r"^\(c\) rating click -> committed while tiny trains \(\d+ DPO steps ran\)",
                     out, re.MULTILINE), out
