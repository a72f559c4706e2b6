"""Notebook benchmark: the quickstart on the default model, as a Binder user would run it.

Prints the wall time of running every cell and the kernel's peak resident memory (VmHWM, read
by the kernel itself from /proc at the end), against the targets: <= 10 minutes and <= 2 GB RSS
on 2 CPU cores. Usage: python benchmarks/bench_notebooks.py [--notebook NAME] [--model default]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
PEAK_CELL = """\
import re
print("PEAK_RSS_KB", re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1))"""


def run(notebook: str, model: str) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(NOTEBOOKS, tmp, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("*.sqlite*", "exports", ".ipynb_checkpoints"))
        nb = nbformat.read(Path(tmp) / notebook, as_version=4)
        nb.cells.append(nbformat.v4.new_code_cell(PEAK_CELL))
        os.environ["LF_WIDGETS_MODEL"] = "" if model == "default" else model
        t0 = time.perf_counter()
        NotebookClient(nb, timeout=1200, kernel_name="python3",
                       resources={"metadata": {"path": tmp}}).execute()
        seconds = time.perf_counter() - t0
    out = "".join(o.get("text", "") for o in nb.cells[-1].outputs)
    peak_kb = int(out.split("PEAK_RSS_KB")[1].split()[0])
    return seconds, peak_kb / 1024**2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notebook", default="01_quickstart.ipynb")
    parser.add_argument("--model", default="default", help="default, or tiny for a smoke run")
    args = parser.parse_args()
    seconds, peak_gb = run(args.notebook, args.model)
    print(f"{args.notebook} on {args.model} ({os.cpu_count()} CPUs): wall {seconds:.0f} s "
          f"(target <= 600 s: {'met' if seconds <= 600 else 'MISSED'}), kernel peak RSS "
          f"{peak_gb:.2f} GB (target <= 2 GB: {'met' if peak_gb <= 2 else 'MISSED'})")


if __name__ == "__main__":
    main()
