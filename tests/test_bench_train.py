"""The training benchmark runs end to end (tiny model, a couple of steps per contender).

No speed assertions: timings flake on shared CI machines. `benchmarks/bench_train.py` itself
prints the figures and whether each target is met.
"""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_train.py"

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("trl", "datasets", "accelerate")),
    reason="needs the test extras (trl, datasets, accelerate)")


def test_bench_train_quick_runs_and_prints_the_table(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "HF_DATASETS_CACHE": str(tmp_path / "datasets")}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    out = proc.stdout
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out[-3000:]}\n{proc.stderr[-3000:]}"
    assert re.search(r"^objective\s+ours\s+vs\s+ours ex/s\s+TRL ex/s\s+ratio\s+target\s+result", out, re.MULTILINE), out
    for objective in ("DPO", "KTO", "SFT"):
        # e.g. "SFT  LoRA step  TRL SFTTrainer  64.282  4.719  13.62x  >=1.0x  met"
        assert re.search(rf"^{objective}\s.*\s\d+\.\d+x\s+>=\d\.\dx\s+(met|MISSED)\b", out, re.MULTILINE), out
    assert re.search(r"^DPO\s.*precompute_ref_log_probs.*x", out, re.MULTILINE), out
    assert "same token ids on both sides: yes" in out
    assert "model-FLOPs utilisation" in out
