"""Notebook benchmark: the quickstart on the default model, as a Binder user would run it.

Prints the time of each cell, the wall time of running every cell and the kernel's peak resident
memory (VmHWM, read by the kernel itself from /proc at the end), against the targets: <= 3
minutes and <= 2 GB RSS (2e9 bytes, the stricter reading; GiB printed too) on 2 quiet CPU cores.
The load average before and after is printed too: on a shared machine the times say little
without it. So is the kernel's CPU time: run with ``--threads 1`` on a busy machine, it is close
to the wall time the same run would take on one idle core (with more threads waiting threads
spin, and CPU time overstates the work).

Binder caps a kernel at 2 GB with a cgroup limit, and the trainer plans with that limit (small
forward/backward passes when memory is small, see ``lf_widgets.trainer.pass_tokens``). This
machine has more, so by default the kernel is told Binder's limit through
``LF_WIDGETS_MEMORY_LIMIT``; ``--cgroup`` enforces it for real instead (a memory cgroup around
the kernel; needs root and a writable cgroup v1 or v2 memory controller), so that the kernel
itself detects it and is killed if it goes over.

Usage: python benchmarks/bench_notebooks.py [--notebook NAME] [--model default|tiny]
       [--memory-limit 2G | --memory-limit none] [--cgroup] [--threads N]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lf_widgets._memory import MEMORY_LIMIT_ENV, parse_size  # noqa: E402

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
PEAK_CELL = """\
import os, re, torch
from lf_widgets._memory import cpu_limit, memory_limit
print("PEAK_RSS_KB", re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1))
print("LIMIT", memory_limit())
print("CPUS", cpu_limit(), "THREADS", torch.get_num_threads())
print("CPU_S", sum(os.times()[:2]))"""
TARGET_S, TARGET_RSS = 180, 2e9


@contextlib.contextmanager
def memory_cgroup(limit: int):
    """Move this process (and so the kernel it starts) into a new memory cgroup of ``limit``
    bytes; yields a function that reads the group's peak usage. Back out and removed at the end."""
    v2 = Path("/sys/fs/cgroup/cgroup.controllers")
    if v2.is_file() and "memory" in v2.read_text().split():
        root, limit_file, peak_file = Path("/sys/fs/cgroup"), "memory.max", "memory.peak"
    elif Path("/sys/fs/cgroup/memory/memory.limit_in_bytes").is_file():
        root, limit_file, peak_file = (Path("/sys/fs/cgroup/memory"), "memory.limit_in_bytes",
                                       "memory.max_usage_in_bytes")
    else:
        raise SystemExit("--cgroup: no cgroup v1 or v2 memory controller here")
    group = root / f"lf_widgets_bench_{os.getpid()}"
    try:
        group.mkdir()
        (group / limit_file).write_text(str(limit))
        (group / "cgroup.procs").write_text(str(os.getpid()))
    except OSError as err:
        raise SystemExit(f"--cgroup: cannot set up {group} ({err}); run as root, or drop --cgroup")
    try:
        yield lambda: int((group / peak_file).read_text()) if (group / peak_file).is_file() else None
    finally:
        (root / "cgroup.procs").write_text(str(os.getpid()))
        time.sleep(0.5)  # the kernel's processes must have left before the group can go
        with contextlib.suppress(OSError):
            group.rmdir()


def run(notebook: str, model: str, limit: str | None, threads: int | None = None) -> dict:
    """Execute a copy of ``notebook``; its wall time, per-cell times, peak RSS and what the
    kernel saw (memory limit, CPUs, torch threads)."""
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(NOTEBOOKS, tmp, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("*.sqlite*", "exports", ".ipynb_checkpoints"))
        nb = nbformat.read(Path(tmp) / notebook, as_version=4)
        nb.cells.append(nbformat.v4.new_code_cell(PEAK_CELL))
        os.environ["LF_WIDGETS_MODEL"] = "" if model == "default" else model
        os.environ.pop(MEMORY_LIMIT_ENV, None)
        if limit:
            os.environ[MEMORY_LIMIT_ENV] = limit
        if threads:
            os.environ["OMP_NUM_THREADS"] = str(threads)  # the kernel's torch keeps it
        t0 = time.perf_counter()
        NotebookClient(nb, timeout=1200, kernel_name="python3", record_timing=True,
                       resources={"metadata": {"path": tmp}}).execute()
        seconds = time.perf_counter() - t0
    out = "".join(o.get("text", "") for o in nb.cells[-1].outputs)
    seen = out.split("LIMIT")[1].split()[0]
    return {"seconds": seconds, "peak": int(out.split("PEAK_RSS_KB")[1].split()[0]) * 1024,
            "seen": None if seen == "None" else int(seen),
            "cpus": out.split("CPUS")[1].split()[0], "threads": out.split("THREADS")[1].split()[0],
            "cpu_s": float(out.split("CPU_S")[1].split()[0]),
            "cells": cell_times(nb.cells[:-1])}


def cell_times(cells) -> list[tuple[int, float, str]]:
    """(number, seconds, first line) of each code cell, from the timings nbclient records."""
    rows, number = [], 0
    for cell in cells:
        if cell.cell_type != "code":
            continue
        number += 1
        timing = cell.metadata.get("execution", {})
        start, end = timing.get("iopub.execute_input"), timing.get("shell.execute_reply")
        if start and end:
            took = (_when(end) - _when(start)).total_seconds()
            first = next((line for line in cell.source.splitlines() if line.strip()), "")
            rows.append((number, took, first[:70]))
    return rows


def _when(stamp: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def load() -> str:
    return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notebook", default="01_quickstart.ipynb")
    parser.add_argument("--model", default="default", help="default, or tiny for a smoke run")
    parser.add_argument("--memory-limit", default="2G",
                        help="Binder's limit, told to the kernel (default 2G); 'none': this machine's")
    parser.add_argument("--cgroup", action="store_true",
                        help="enforce --memory-limit with a real memory cgroup instead of telling it")
    parser.add_argument("--threads", type=int, default=None,
                        help="OMP_NUM_THREADS for the kernel (default: lf_widgets fits torch's count)")
    args = parser.parse_args()
    limit = None if args.memory_limit.lower() == "none" else args.memory_limit
    group_peak = None
    print(f"before: {load()}", flush=True)
    if args.cgroup:
        if not limit:
            parser.error("--cgroup needs a --memory-limit")
        with memory_cgroup(parse_size(limit)) as read_peak:
            result = run(args.notebook, args.model, None, args.threads)  # detected, not told
            group_peak = read_peak()
    else:
        result = run(args.notebook, args.model, limit, args.threads)
    print(f"after:  {load()}")
    seconds, peak, seen = result["seconds"], result["peak"], result["seen"]
    print("cell  seconds  first line")
    for number, took, first in result["cells"]:
        print(f"{number:4d}  {took:7.1f}  {first}")
    how = ("enforced by a memory cgroup" if args.cgroup else
           f"told through {MEMORY_LIMIT_ENV}" if limit else "none: this machine's RAM")
    print(f"memory limit {limit or 'none'} ({how}); the kernel saw "
          f"{'no limit' if seen is None else f'{seen / 2**30:.2f} GiB'}, {result['cpus']} CPUs, "
          f"torch used {result['threads']} threads; kernel CPU time {result['cpu_s']:.0f} s")
    if group_peak is not None:
        print(f"cgroup peak usage (kernel + this script, page cache included): {group_peak / 2**30:.2f} GiB")
    print(f"{args.notebook} on {args.model} ({os.cpu_count()} CPUs): wall {seconds:.0f} s "
          f"(target <= {TARGET_S} s on 2 quiet cores: {'met' if seconds <= TARGET_S else 'MISSED'}), "
          f"kernel peak RSS {peak / 1e9:.2f} GB = {peak / 2**30:.2f} GiB "
          f"(target <= 2 GB, i.e. 2e9 bytes: {'met' if peak <= TARGET_RSS else 'MISSED'})")


if __name__ == "__main__":
    main()
