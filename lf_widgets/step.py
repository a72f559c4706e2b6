"""One training step: forward passes, the loss of the objective, and (optionally) one update.

Shared by the trainer's loop and the stepper, so a teaching step is exactly a training step.
Runs on the model owner's thread (see ``policy``); pure functions of the model and examples.

Extra NLL terms (:class:`AuxTerm`: the critique term of ``TrainConfig.critique_weight``, hindsight
examples beside DPO/KTO) run after the objective's passes, in the same model state, and add to
its loss and gradient; a step without them is exactly the plain one.

Reference log-probs come from the same model with the adapter disabled (no second copy) and are
cached per example: the base is frozen, so they never change. TRL's default DPO loop recomputes
them every step; that forward pass is ~25 % of a DPO step on CPU.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from . import batching as _batching, data as _data
from ._planning import split_passes
from .losses import dpo_loss, kto_kl_estimate, kto_loss, sequence_logps, sft_loss, weighted_nll

__all__ = ["ReferenceCache", "StepResult", "AuxTerm", "train_step", "forward_logps", "to_device",
           "POOLS"]


def forward_logps(model, batch: dict, prefix: str = "") -> tuple[torch.Tensor, torch.Tensor]:
    labels = batch[f"{prefix}labels"]  # (B, T), -100 on prompt and padding
    scored = (labels != -100).any(dim=0).nonzero()
    # Logits only from the position before the first completion token on: the vocabulary
    # projection and its log-softmax are most of a step's memory, and the prompt needs neither.
    keep = labels.shape[1] - int(scored[0]) + 1 if len(scored) else 1
    logits = model(input_ids=batch[f"{prefix}input_ids"],
                   attention_mask=batch[f"{prefix}attention_mask"],
                   logits_to_keep=keep).logits  # (B, keep, V)
    return sequence_logps(logits, labels[:, -keep:])  # (B,), (B,)


class ReferenceCache:
    """Reference (adapter-off) log-probs per example key, computed once each."""

    def __init__(self):
        self.values: dict[str, float] = {}
        self.hits = self.misses = 0

    def get(self, model, batch: dict, keys: list[str], prefix: str = "") -> torch.Tensor:
        first = {}  # key -> first row holding it: a sequence shared by two pairs runs once
        for i, k in enumerate(keys):
            if k not in self.values:
                first.setdefault(k, i)
        missing = list(first.values())
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if missing:
            rows = {k: v[missing] for k, v in batch.items() if k.startswith(prefix) and v.dim() == 2}
            with torch.no_grad(), model.disable_adapter():
                logps, _ = forward_logps(model, rows, prefix)
            for i, value in zip(missing, logps.tolist()):
                self.values[keys[i]] = value
        device = batch[f"{prefix}input_ids"].device
        return torch.tensor([self.values[k] for k in keys], dtype=torch.float32, device=device)


class _Pass(NamedTuple):
    """What one forward pass over part of a step's batch gives the step."""

    loss_sum: torch.Tensor  # () the summed loss of these examples (SFT: over their tokens)
    count: int  # what the step's loss is averaged over: examples, or (SFT) completion tokens
    tokens: int  # attention tokens in the pass, for throughput figures
    stats: dict[str, torch.Tensor]  # per-example values (detached), averaged over the step


def _sft_pass(model, examples, pad_id, device, cache, config, kl=None) -> _Pass:
    batch = to_device(_batching.collate_sft(examples, pad_id), device)
    logps, n_tokens = forward_logps(model, batch)
    # the sum of sft_loss(reduction="token_mean") over passes, before the step divides by all tokens
    return _Pass(sft_loss(logps, n_tokens, reduction="sum"), int(n_tokens.sum()),
                 int(batch["attention_mask"].sum()),
                 {"target_logp": logps.detach() / n_tokens.clamp(min=1)})  # per token


def _dpo_pass(model, examples, pad_id, device, cache, config, kl=None) -> _Pass:
    batch = to_device(_batching.collate_pairs(examples, pad_id), device)  # 2B rows: chosen, then rejected
    b = len(examples)
    keys = [_data.sequence_key(e.prompt_ids, e.chosen_ids) for e in examples] + \
           [_data.sequence_key(e.prompt_ids, e.rejected_ids) for e in examples]
    ref = cache.get(model, batch, keys)  # (2B,)
    logps, n_tokens = forward_logps(model, batch)  # (2B,), (2B,)
    out = dpo_loss(logps[:b], logps[b:], ref[:b], ref[b:], beta=config.beta)
    chosen_per_token = logps[:b] / n_tokens[:b].clamp(min=1)  # (B,) its fall is a DPO failure
    losses = out.losses
    if config.nll_weight:  # RPO / TRL's rpo_alpha: keep the chosen answer likely, not only ahead
        losses = losses - config.nll_weight * chosen_per_token
    return _Pass(losses.sum(), b, int(batch["attention_mask"].sum()),
                 {"reward_margin": out.margins, "pair_accuracy": out.accuracies,
                  "chosen_reward": out.chosen_rewards, "rejected_reward": out.rejected_rewards,
                  "chosen_logp": chosen_per_token.detach()})


def _kto_kl(model, examples, pad_id, device, cache) -> torch.Tensor:
    """KTO's reference point z₀ for the whole step's batch (mismatched rows, no gradient).

    Computed once per step, before the passes, so that splitting the batch changes nothing.
    """
    batch = to_device(_batching.collate_kto(examples, pad_id), device)
    kl_keys = [_data.sequence_key(e.prompt_ids, partner)  # fixed partners: cached after one epoch
               for e, partner in zip(examples, _batching.kl_completions(examples))]
    ref_kl = cache.get(model, batch, kl_keys, prefix="kl_")
    with torch.no_grad():  # the KL estimate is a baseline, not a training signal (as in TRL)
        policy_kl, _ = forward_logps(model, batch, prefix="kl_")
    return kto_kl_estimate(policy_kl, ref_kl)


def _kto_pass(model, examples, pad_id, device, cache, config, kl=None) -> _Pass:
    batch = to_device(_batching.collate_sft(examples, pad_id), device)
    good = torch.tensor([e.desirable for e in examples], dtype=torch.bool, device=device)  # (B,)
    ref = cache.get(model, batch, [e.key for e in examples])
    logps, _ = forward_logps(model, batch)
    out = kto_loss(logps[good], logps[~good], ref[good], ref[~good], None, None, beta=config.beta,
                   kl=kl)  # z₀ of the whole batch, not of this pass
    stats = {"kl": kl.expand(len(examples))}
    if out.chosen_rewards.numel():
        stats["desirable_reward"] = out.chosen_rewards
    if out.rejected_rewards.numel():
        stats["undesirable_reward"] = out.rejected_rewards
    return _Pass(out.losses.sum(), len(examples), int(batch["attention_mask"].sum()), stats)


_PASSES = {"sft": _sft_pass, "dpo": _dpo_pass, "kto": _kto_pass}
POOLS = {"sft": "sft", "dpo": "pairs", "kto": "kto"}  # objective -> TrainingData field


class StepResult(NamedTuple):
    loss: float  # the batch's loss (NaN when the update was skipped for a non-finite loss)
    tokens: int  # attention tokens over all passes
    extras: dict[str, float]  # objective-specific means over the batch (reward margin, ...)
    skipped: bool  # True when the loss, gradient or update was not finite: nothing changed
    note: str  # why it was skipped
    grad_norm: float  # before clipping
    passes: int  # forward/backward passes the batch was split into
    update_ratio: float = float("nan")  # |Δθ| / |θ| of the adapter: a divergence signal


class AuxTerm(NamedTuple):
    """An extra NLL term of a step: ``weight`` × the mean NLL per token of ``examples``' targets.

    ``name`` "critique": feedback-modelling examples (the critique given prompt and answer);
    "hindsight": critique-conditioned SFT examples in a DPO or KTO step. See
    :mod:`lf_widgets.critique_data`; the trainer chooses which examples each step gets.
    """

    name: str
    weight: float  # λ > 0
    examples: list  # data.SFTExample records (prompt_ids → completion_ids)


def _autocast(device):
    # bf16 on CUDA for the forward passes only (backward outside, as PyTorch advises)
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def _run_passes(model, objective, examples, pad_id, device, cache, config, update):
    """Forward (and backward) every pass; returns (loss sum, count, tokens, stats, skip note)."""
    step_pass = _PASSES[objective]
    autocast = _autocast(device)
    with autocast:
        kl = _kto_kl(model, examples, pad_id, device, cache) if objective == "kto" else None
    total, count, tokens, stats, note = 0.0, 0, 0, {}, ""
    parts = split_passes(examples, config.pass_tokens)
    with torch.enable_grad() if update else torch.no_grad():
        for part in parts:
            with autocast:
                out = step_pass(model, part, pad_id, device, cache, config, kl)
            loss_sum = out.loss_sum.detach().item()
            count, tokens, total = count + out.count, tokens + out.tokens, total + loss_sum
            for name, values in out.stats.items():
                stats.setdefault(name, []).append(values.float().cpu())
            if not math.isfinite(loss_sum):
                note = f"skipped: loss is {loss_sum}"
                if update:
                    break  # the update will be dropped: no need for the other passes
            elif update:
                out.loss_sum.backward()  # gradients add up over passes
    extras = {name: torch.cat(v).mean().item() for name, v in stats.items()}
    return total, count, tokens, extras, note, len(parts)


def _run_aux(model, term: AuxTerm, pad_id, device, config, update,
             count: int) -> tuple[float, int, int, str]:
    """Forward (and backward) one extra term in passes; returns (mean NLL per token, tokens,
    passes, skip note). Its loss is backpropagated × ``count``, the objective's count, because
    :func:`_update` divides every gradient by that: the update then gets weight × the mean's."""
    # collate_sft labels every completion token, and each is predicted from the one before
    n_target = sum(len(e.completion_ids) for e in term.examples)
    parts = split_passes(term.examples, config.pass_tokens)
    nll, tokens = 0.0, 0
    with torch.enable_grad() if update else torch.no_grad():
        for part in parts:
            with _autocast(device):
                batch = to_device(_batching.collate_sft(part, pad_id), device)
                logps, _ = forward_logps(model, batch)
                loss = weighted_nll(logps, n_target, term.weight)
            value = loss.detach().item()
            tokens += int(batch["attention_mask"].sum())
            if not math.isfinite(value):
                return float("nan"), tokens, len(parts), f"skipped: {term.name} NLL is {value}"
            if update:
                (loss * max(count, 1)).backward()
            nll += value / term.weight
    return nll, tokens, len(parts), ""


def _update(params, optimizer, count: int, max_grad_norm: float) -> tuple[float, float, str]:
    """Average, clip and apply the gradients; roll back an update that is not finite.

    Returns (gradient norm, update ratio |Δθ|/|θ|, skip note). ``lr=inf`` gives a finite loss
    and gradient but NaN weights: without the check that adapter would be checkpointed and
    resumed, and every later generation would fail.
    """
    for p in params:
        if p.grad is not None:
            p.grad.div_(max(count, 1))  # sum of pass losses -> the batch mean
    norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm).item()
    if not math.isfinite(norm):
        return norm, float("nan"), f"skipped: gradient norm is {norm}"
    before = [p.detach().clone() for p in params]  # the adapter only: ~2M numbers on 135M/r=8
    try:
        optimizer.step()
    except RuntimeError as err:  # e.g. an lr that overflows the weights' dtype
        with torch.no_grad():
            for p, b in zip(params, before):
                p.copy_(b)
        return norm, float("nan"), f"skipped: the update failed ({err}; rolled back)"
    delta = math.sqrt(sum(float((p.detach() - b).double().pow(2).sum()) for p, b in zip(params, before)))
    size = math.sqrt(sum(float(b.double().pow(2).sum()) for b in before))
    if not math.isfinite(delta) or not all(bool(torch.isfinite(p).all()) for p in params):
        with torch.no_grad():
            for p, b in zip(params, before):
                p.copy_(b)
        return norm, float("nan"), "skipped: the update made the adapter non-finite (rolled back)"
    return norm, delta / size if size > 0 else float("inf"), ""


def train_step(model, objective: str, examples, *, pad_id: int, device, cache, config,
               params=None, optimizer=None, aux: list[AuxTerm] = ()) -> StepResult:
    """One step on ``examples``: the loss of the batch, and (with an optimizer) one update.

    The batch runs as :func:`~lf_widgets._planning.split_passes` of at most
    ``config.pass_tokens`` tokens (0: one pass); each pass's summed loss is backpropagated and
    the gradients are divided by the batch's count at the end, so the update equals the one-pass
    update while only one pass's activations are alive. Each :class:`AuxTerm` then adds
    ``weight × its mean NLL`` to the loss and its gradient to the averaged one, with the model
    in the same state (its extras: ``<name>_nll``, ``<name>_examples``); with no terms the step
    is exactly the plain one. An update whose loss, gradient norm or result is not finite is
    skipped (the weights stay as they were). Without an optimizer it only measures. The caller
    sets train/eval mode.
    """
    device = torch.device(device)
    update = optimizer is not None
    total, count, tokens, extras, note, passes = _run_passes(
        model, objective, examples, pad_id, device, cache, config, update)
    loss = total / max(count, 1)
    for term in aux:  # feedback modelling, hindsight (none: the plain step, bit for bit)
        if note or not term.examples:
            continue
        nll, more_tokens, more_passes, note = _run_aux(model, term, pad_id, device, config,
                                                       update, count)
        loss, tokens, passes = loss + term.weight * nll, tokens + more_tokens, passes + more_passes
        extras.update({f"{term.name}_nll": nll, f"{term.name}_examples": len(term.examples)})
    if not update:
        return StepResult(loss, tokens, extras, bool(note), note, float("nan"), passes)
    try:
        if note:
            return StepResult(float("nan"), tokens, extras, True, note, float("nan"), passes)
        norm, ratio, note = _update(params, optimizer, count, config.max_grad_norm)
        if note:
            return StepResult(float("nan"), tokens, extras, True, note, norm, passes)
        return StepResult(loss, tokens, extras, False, "", norm, passes, ratio)
    finally:
        optimizer.zero_grad(set_to_none=True)


def to_device(batch: dict, device) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


