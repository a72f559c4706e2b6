"""How much memory and CPU this process may use: the container's limits, not just the machine's.

Binder (and Docker, Kubernetes) cap a kernel with cgroup limits that ``/proc/meminfo`` and
``os.cpu_count()`` do not show: the machine may have 64 GB and 16 cores while the kernel is
killed at 2 GB and throttled to 1 CPU. The trainer reads the memory limit to decide whether a
batch must run in several smaller passes (``trainer.pass_tokens``); ``models.load_model`` reads
the CPU limit to size torch's thread pool (``models.fit_torch_threads``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["memory_limit", "cpu_limit", "parse_size", "MEMORY_LIMIT_ENV"]

MEMORY_LIMIT_ENV = "LF_WIDGETS_MEMORY_LIMIT"  # overrides detection, e.g. "2G", "1536M", "2147483648"
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_size(text: str) -> int:
    """``"2G"`` → 2147483648; also ``"1536M"``, ``"2GiB"``, ``"2gb"`` and plain bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*", text.upper())
    if not match:
        raise ValueError(f"{MEMORY_LIMIT_ENV}={text!r} is not a size like 2G, 1536M or 2147483648")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _read_int(path: Path) -> int | None:
    text = _read(path)
    return int(text) if text and text.isdigit() else None  # v2 says "max", v1 "-1": no limit


def _cgroup_folders(proc_cgroup: Path, root: Path, controller: str) -> Iterator[tuple[str, Path]]:
    """``("v1" | "v2", folder)`` for this process's ``controller`` group and each ancestor.

    The limit of every ancestor applies too. Inside a container the path may be the host's
    while the mount shows the container's own group at the root, so the root counts as well.
    """
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2: "0::/path"
            version, bases = "v2", [root]
        elif controller in controllers.split(","):  # v1: "4:memory:/path", "3:cpu,cpuacct:/path"
            # v1 mounts each hierarchy at a folder named after its controllers ("cpu,cpuacct"),
            # often with a symlink per controller ("cpu"): whichever exists.
            version = "v1"
            bases = [b for b in (root / controllers, root / controller) if b.is_dir()][:1]
        else:
            continue
        for base in bases:
            folder = base / path.lstrip("/")
            for candidate in [folder, *folder.parents]:
                yield version, candidate
                if candidate == base:
                    break


def _cgroup_values(proc_cgroup: Path, root: Path, controller: str,
                   read: Callable[[str, Path], float | None]) -> list[float]:
    values = (read(version, folder)
              for version, folder in _cgroup_folders(proc_cgroup, root, controller))
    return [v for v in values if v is not None]


def _memory_max(version: str, folder: Path) -> int | None:
    return _read_int(folder / ("memory.max" if version == "v2" else "memory.limit_in_bytes"))


def _cpu_quota(version: str, folder: Path) -> float | None:
    """CPUs a group's quota allows (quota / period), None without a quota."""
    if version == "v2":  # cpu.max: "150000 100000" or "max 100000"
        quota, _, period = (_read(folder / "cpu.max") or "max").partition(" ")
    else:  # cpu.cfs_quota_us is -1 without a quota
        quota, period = _read(folder / "cpu.cfs_quota_us") or "", _read(folder / "cpu.cfs_period_us") or ""
    if not (quota.isdigit() and period.isdigit() and int(period) > 0):
        return None
    return int(quota) / int(period)


def _ram() -> int | None:
    try:
        match = re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text())
    except OSError:
        match = None
    if match:
        return int(match.group(1)) * 1024
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def memory_limit(*, proc_cgroup: str | os.PathLike = "/proc/self/cgroup",
                 cgroup_root: str | os.PathLike = "/sys/fs/cgroup") -> int | None:
    """Bytes this process may use: the smallest of $LF_WIDGETS_MEMORY_LIMIT, the cgroup limits
    (v1 or v2, this group and its parents) and the machine's RAM. None when nothing is known."""
    if os.environ.get(MEMORY_LIMIT_ENV, "").strip():
        return parse_size(os.environ[MEMORY_LIMIT_ENV])
    limits = _cgroup_values(Path(proc_cgroup), Path(cgroup_root), "memory", _memory_max)
    known = [int(v) for v in (*limits, _ram()) if v]
    return min(known) if known else None


def cpu_limit(*, proc_cgroup: str | os.PathLike = "/proc/self/cgroup",
              cgroup_root: str | os.PathLike = "/sys/fs/cgroup",
              affinity: set[int] | None = None) -> float | None:
    """CPUs this process may keep busy: the smallest of its CPU affinity mask's size and the
    cgroup CPU quotas (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us / cpu.cfs_period_us``; this group
    and its parents). A quota may be fractional (1.5 CPUs). None when nothing is known.

    Parameters
    ----------
    proc_cgroup, cgroup_root : path
        Where to read this process's groups and the cgroup mount (tests pass fake ones).
    affinity : set of int, optional
        The CPUs this process may run on; default ``os.sched_getaffinity(0)``.
    """
    if affinity is None:
        try:
            affinity = os.sched_getaffinity(0)
        except (AttributeError, OSError):  # not on Linux
            affinity = None
    cpus = len(affinity) if affinity else os.cpu_count()
    quotas = _cgroup_values(Path(proc_cgroup), Path(cgroup_root), "cpu", _cpu_quota)
    known = [float(v) for v in (*quotas, cpus) if v]
    return min(known) if known else None
