"""Memory planning for a training step: how big a forward/backward pass may be, and giving
memory back after a step. Read once per run (see ``trainer``), from ``_memory.memory_limit``.
"""

from __future__ import annotations

import ctypes

from ._memory import memory_limit

__all__ = ["CPU_PASS_TOKENS", "SMALL_MEMORY", "small_memory", "pass_tokens", "split_passes",
           "release_memory", "row_lengths"]

# Padded tokens per forward/backward pass when TrainConfig.pass_tokens is None and the process
# may use at most SMALL_MEMORY (a CPU Binder kernel: 2 GB). A CPU step's memory is mostly
# activations, ~3 MB a token at its peak for the 135M model in fp32; 256 keeps the quickstart
# under 2 GB. Small passes cost speed (each re-reads every weight: DPO −38 % on 2 cores,
# benchmarks/README.md), so with more memory a batch runs in one pass.
CPU_PASS_TOKENS = 256
SMALL_MEMORY = 4 * 2**30


def small_memory(device_type: str) -> bool:
    """True for a CPU process that may use at most SMALL_MEMORY (a Binder kernel)."""
    if device_type != "cpu":
        return False
    limit = memory_limit()
    return limit is not None and limit <= SMALL_MEMORY


def pass_tokens(configured: int | None, device_type: str) -> int:
    """Pass size for a run: the configured one; for None, CPU_PASS_TOKENS where memory is
    small (the cgroup limit counts), else 0 (the whole batch in one pass)."""
    if configured is not None:
        return configured
    return CPU_PASS_TOKENS if small_memory(device_type) else 0


def row_lengths(example) -> list[int]:
    """Tokens of each row an example puts in a batch (a DPO pair is two rows)."""
    p = len(example.prompt_ids)
    if hasattr(example, "chosen_ids"):
        return [p + len(example.chosen_ids), p + len(example.rejected_ids)]
    return [p + len(example.completion_ids)]


def split_passes(examples, max_tokens: int | None) -> list[list]:
    """Cut a step's batch, in order, into passes of at most ``max_tokens`` padded tokens.

    A pass costs rows × its longest row; an example longer than the limit gets a pass of its
    own. ``None`` or 0: the whole batch in one pass.
    """
    if not max_tokens:
        return [list(examples)]
    passes, current, width = [], [], 0
    for example in examples:
        lengths = row_lengths(example)
        new_width = max(width, *lengths)
        if current and (len(current) + 1) * len(lengths) * new_width > max_tokens:
            passes.append(current)
            current, new_width = [], max(lengths)
        current.append(example)
        width = new_width
    return passes + [current]


_libc = None


def release_memory() -> None:
    """Hand memory that malloc keeps after a step back to the OS (glibc only; else nothing).

    A step frees hundreds of MB of activations; glibc keeps most of it in its arenas, so a kernel
    would sit at its training peak for good. ``malloc_trim`` costs ~30-90 ms on 2 cores.
    """
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL("libc.so.6")
            _libc.malloc_trim  # noqa: B018 (musl, macOS: no such function)
        except (OSError, AttributeError):
            _libc = False
    if _libc:
        _libc.malloc_trim(0)
