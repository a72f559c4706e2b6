"""Examples → tensors: collation (loss on completion tokens only) and length-grouped batches.

Pure functions of examples and a pad id; no model. Examples are read by their fields
(``prompt_ids``, ``completion_ids`` or ``chosen_ids``/``rejected_ids``, ``desirable``,
``kl_completion_ids``), so this module imports nothing of the package: :mod:`lf_widgets.data`,
which defines them, imports it, never the other way round.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

__all__ = ["IGNORE_INDEX", "collate_sft", "collate_pairs", "collate_kto", "kl_completions",
           "length_batches", "padding_waste"]

IGNORE_INDEX = -100  # label of prompt and padding positions: no loss there


def _pad(prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], pad_id: int,
         prefix: str = "") -> dict[str, torch.Tensor]:
    """Right-padded prompt + completion rows; labels only on completion tokens."""
    if not prompts:
        raise ValueError("cannot collate an empty batch")
    n, width = len(prompts), max(len(p) + len(c) for p, c in zip(prompts, completions))
    ids = torch.full((n, width), pad_id, dtype=torch.long)  # (N, T)
    mask = torch.zeros((n, width), dtype=torch.long)  # (N, T)
    labels = torch.full((n, width), IGNORE_INDEX, dtype=torch.long)  # (N, T)
    for i, (p, c) in enumerate(zip(prompts, completions)):
        row = torch.tensor([*p, *c], dtype=torch.long)  # (len_i,)
        ids[i, :len(row)] = row
        mask[i, :len(row)] = 1
        labels[i, len(p):len(row)] = row[len(p):]  # by position, not pad_id: pad may be <|im_end|>
    return {f"{prefix}input_ids": ids, f"{prefix}attention_mask": mask, f"{prefix}labels": labels}


def collate_sft(examples: Sequence, pad_id: int) -> dict[str, torch.Tensor]:
    """Batch SFT examples (``data.SFTExample``): ``input_ids``, ``attention_mask``, ``labels``.

    Each (B, T) long. Right padding; ``labels`` is -100 on prompt and padding, so the loss covers completions only.
    """
    return _pad([e.prompt_ids for e in examples], [e.completion_ids for e in examples], pad_id)


def collate_pairs(examples: Sequence, pad_id: int) -> dict[str, torch.Tensor]:
    """Batch DPO pairs (``data.PairExample``) as 2B rows for one forward pass.

    Chosen rows 0..B-1, rejected B..2B-1. Same keys as :func:`collate_sft`, each (2B, T).
    """
    prompts = [e.prompt_ids for e in examples] * 2
    completions = [e.chosen_ids for e in examples] + [e.rejected_ids for e in examples]
    return _pad(prompts, completions, pad_id)


def kl_completions(examples: Sequence) -> list[tuple[int, ...]]:
    """The completion each KTO example is paired with for the KL estimate.

    Its fixed partner (``data.assign_kl_partners``, set by ``build_examples``) where it has one;
    otherwise the completion of example (i + 1) % B of the batch (TRL rotates the other way, i
    with i - 1: the same estimate). A batch of one has no mismatched completion and uses its own.
    """
    n = len(examples)
    return [tuple(e.kl_completion_ids) or tuple(examples[(i + 1) % n].completion_ids)
            for i, e in enumerate(examples)]


def collate_kto(examples: Sequence, pad_id: int) -> dict[str, torch.Tensor]:
    """Batch KTO examples (``data.KTOExample``), plus mismatched rows for the KL estimate.

    Keys of :func:`collate_sft` (B, T); ``desirable`` (B,) bool; ``kl_input_ids``,
    ``kl_attention_mask``, ``kl_labels`` (B, T'): prompt i with :func:`kl_completions`' i.
    """
    prompts = [e.prompt_ids for e in examples]
    batch = _pad(prompts, [e.completion_ids for e in examples], pad_id)
    batch["desirable"] = torch.tensor([e.desirable for e in examples], dtype=torch.bool)  # (B,)
    batch.update(_pad(prompts, kl_completions(examples), pad_id, prefix="kl_"))
    return batch


def _row_lengths(example) -> list[int]:
    p = len(example.prompt_ids)
    if hasattr(example, "chosen_ids"):
        return [p + len(example.chosen_ids), p + len(example.rejected_ids)]
    return [p + len(example.completion_ids)]


def length_batches(examples: Sequence, batch_size: int, *, seed: int = 0,
                   pool_factor: int = 50) -> list[list]:
    """Batches of examples of similar length, so little compute goes to padding.

    The examples are shuffled and split into pools of ``pool_factor × batch_size``; each pool is
    sorted by length and cut into batches (its last one may be smaller); then the batch order is
    shuffled. Every example lands in exactly one batch.

    Parameters
    ----------
    examples : sequence of SFTExample, PairExample or KTOExample
    batch_size : int
    seed : int
        Seeds ``random.Random`` for both shuffles: same seed, same batches.
    pool_factor : int
        Pool size in batches: larger wastes less padding, smaller keeps more randomness.

    Returns
    -------
    list of lists of examples
    """
    if batch_size < 1 or pool_factor < 1:
        raise ValueError("batch_size and pool_factor must be at least 1")
    rng = random.Random(seed)
    order = list(examples)
    rng.shuffle(order)
    pool, batches = pool_factor * batch_size, []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start:start + pool], key=lambda e: max(_row_lengths(e)))
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def padding_waste(batches: Sequence[Sequence]) -> float:
    """Fraction of positions that are padding once each batch is collated.

    Pairs count as two rows (chosen and rejected share one width); KTO's KL rows are left out.
    """
    padded = real = 0
    for batch in batches:
        rows = [n for e in batch for n in _row_lengths(e)]
        if rows:
            padded, real = padded + max(rows) * len(rows), real + sum(rows)
    return 1 - real / padded if padded else 0.0
