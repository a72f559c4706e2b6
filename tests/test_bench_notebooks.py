"""The notebook benchmark runs end to end on the tiny model, and the kernel sees the limit it is told.

No memory or time assertions here (the real-model figures are in benchmarks/README.md).
"""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_notebooks_smoke_run(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_notebooks.py"), "--model", "tiny",
                           "--memory-limit", "1536M"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    assert "the kernel saw 1.50 GiB" in proc.stdout
    assert "kernel peak RSS" in proc.stdout and "wall" in proc.stdout
