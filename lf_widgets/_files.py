"""The one way this package writes a file or a folder: beside its destination, then renamed.

A reader (or a Session after a crash) sees either the old content or the new one, never half of
either. Everything written is private to its owner (files 0600, folders 0700), like the feedback
log: exports and adapters carry what people wrote. Temporaries share one naming scheme
(``.<name>.tmp-<pid>-<random>``), so :func:`clean_stale` can remove those a killed process left.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_file", "atomic_folder", "clean_stale", "clean_stale_in", "FILE_MODE",
           "FOLDER_MODE"]

FILE_MODE = 0o600
FOLDER_MODE = 0o700
_TMP = ".{name}.tmp-"  # prefix of every temporary this module makes
STALE_AFTER_S = 3600.0  # a temporary this old belongs to no live writer


def _private_tree(path: Path) -> None:
    if path.is_dir():
        os.chmod(path, FOLDER_MODE)
        for root, dirs, files in os.walk(path):
            for d in dirs:
                os.chmod(os.path.join(root, d), FOLDER_MODE)
            for f in files:
                os.chmod(os.path.join(root, f), FILE_MODE)
    else:
        os.chmod(path, FILE_MODE)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` (mode 0600).

    >>> with atomic_file("out.csv") as tmp:     # doctest: +SKIP
    ...     frame.to_csv(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=FOLDER_MODE)
    fd, name = tempfile.mkstemp(prefix=_TMP.format(name=path.name) + f"{os.getpid()}-",
                                dir=path.parent)
    os.close(fd)  # mkstemp made it 0600 already
    tmp = Path(name)
    try:
        yield tmp
        _private_tree(tmp)  # a writer may have replaced the file with its own umask
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder to fill; on success it replaces the folder ``path``.

    Files become 0600 and folders 0700. Replacing an existing folder moves it aside first
    (two renames: a reader never sees a missing folder for longer than between them).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=FOLDER_MODE)
    clean_stale(path)
    tmp = Path(tempfile.mkdtemp(prefix=_TMP.format(name=path.name) + f"{os.getpid()}-",
                                dir=path.parent))
    try:
        yield tmp
        _private_tree(tmp)
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=_TMP.format(name=path.name) + "old-",
                                        dir=path.parent))
            os.rmdir(old)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def clean_stale(path: str | os.PathLike, *, older_than_s: float = STALE_AFTER_S) -> list[Path]:
    """Remove temporaries of ``path`` that a killed writer left (older than ``older_than_s``,
    or made by a process that no longer runs). Returns what was removed."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    removed = []
    now = time.time()
    for tmp in path.parent.glob(_TMP.format(name=path.name) + "*"):
        pid = tmp.name[len(_TMP.format(name=path.name)):].split("-", 1)[0]
        alive = pid.isdigit() and _alive(int(pid))
        try:
            old = now - tmp.stat().st_mtime > older_than_s
        except FileNotFoundError:
            continue
        if old or not alive:
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def clean_stale_in(folder: str | os.PathLike, *, older_than_s: float = STALE_AFTER_S) -> list[Path]:
    """:func:`clean_stale` for every temporary in ``folder`` (e.g. checkpoints a kill left)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for tmp in folder.glob(".*.tmp-*"):
        name = tmp.name[1:tmp.name.index(".tmp-")]
        removed += clean_stale(folder / name, older_than_s=older_than_s)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
