"""How much memory this process may use: the container's limit, not just the machine's RAM.

Binder (and Docker, Kubernetes) cap a kernel with a cgroup limit that ``/proc/meminfo`` does not
show: the machine may have 64 GB while the kernel is killed at 2 GB. The trainer reads this to
decide whether a batch must run in several smaller passes (``trainer.pass_tokens``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["memory_limit", "parse_size", "MEMORY_LIMIT_ENV"]

MEMORY_LIMIT_ENV = "LF_WIDGETS_MEMORY_LIMIT"  # overrides detection, e.g. "2G", "1536M", "2147483648"
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_size(text: str) -> int:
    """``"2G"`` → 2147483648; also ``"1536M"``, ``"2GiB"``, ``"2gb"`` and plain bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*", text.upper())
    if not match:
        raise ValueError(f"{MEMORY_LIMIT_ENV}={text!r} is not a size like 2G, 1536M or 2147483648")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # cgroup v2 says "max" for no limit


def _cgroup_limits(proc_cgroup: Path, root: Path) -> list[int]:
    """Limits of this process's memory cgroup and of its ancestors (v2 and v1)."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return []
    limits = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2: "0::/path"; the limit of every ancestor applies too
            base, files = root, ("memory.max",)
        elif "memory" in controllers.split(","):  # v1: "4:memory:/path"
            base, files = root / "memory", ("memory.limit_in_bytes",)
        else:
            continue
        folder = base / path.lstrip("/")
        # Inside a container the path may be the host's while the mount shows the container's
        # own group at the root, so the root's file counts as well.
        for candidate in [folder, *folder.parents]:
            for name in files:
                value = _read_int(candidate / name)
                if value is not None:
                    limits.append(value)
            if candidate == base:
                break
    return limits


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
    known = [v for v in (*_cgroup_limits(Path(proc_cgroup), Path(cgroup_root)), _ram()) if v]
    return min(known) if known else None
