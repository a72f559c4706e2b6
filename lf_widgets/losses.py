"""Training objectives as pure functions of logits and log-probabilities.

No model and no trainer here: the trainer runs the forward passes, this module turns their
log-probs into losses. Every function is checked against hand-computed numbers and against TRL
(`tests/test_losses.py`).

Notation: ``logπ(y|x)`` is a completion's summed log-prob under the policy (the model with its
LoRA adapter), ``logπ_ref(y|x)`` the same under the frozen base model, and the implied reward is
``r(x, y) = β (logπ(y|x) − logπ_ref(y|x))``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["DPOOutput", "KTOOutput", "dpo_loss", "kto_kl_estimate", "kto_loss", "selective_logps",
           "sequence_logps", "sft_loss", "weighted_nll"]


def selective_logps(logits: Tensor, labels: Tensor) -> Tensor:
    """Log-probability of each label under its logits, ``log_softmax(logits)[..., label]``.

    Same numbers as ``log_softmax(-1).gather(...)`` without a second (B, T, V) tensor: for
    fp32/fp64, ``logp = x[label] − logsumexp(x)`` one row at a time; for bf16/fp16, where that
    difference loses too much precision, ``log_softmax`` one row at a time (as TRL does).
    `logits` (B, T, V) and `labels` (B, T, valid ids) give a (B, T) tensor of `logits`' dtype.
    """
    if logits.dtype in (torch.float32, torch.float64):
        picked = logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1)  # (B, T)
        norms = torch.stack([torch.logsumexp(row, dim=-1) for row in logits])  # (B, T)
        return picked - norms
    rows = [
        F.log_softmax(row, dim=-1).gather(-1, row_labels.unsqueeze(-1)).squeeze(-1)  # (T,)
        for row, row_labels in zip(logits, labels)
    ]
    return torch.stack(rows)  # (B, T)


def sequence_logps(
    logits: Tensor, labels: Tensor, ignore_index: int = -100, average: bool = False
) -> tuple[Tensor, Tensor]:
    """Log-probability of each sequence's completion, ``Σ_t log P(y_t | x, y_<t)``.

    The causal shift happens here: ``logits[:, t]`` predicts ``labels[:, t + 1]``. Positions whose
    label is `ignore_index` (prompt and padding) contribute nothing.

    Parameters
    ----------
    logits : Tensor, shape (B, T, V)
        Model output for the full sequences (prompt + completion + padding).
    labels : LongTensor, shape (B, T)
        The input ids with prompt and padding positions set to `ignore_index`.
    average : bool
        Return the per-token mean ``Σ_t log P / n_tokens`` instead of the sum (0 for no tokens).

    Returns
    -------
    logps : Tensor, shape (B,)
        Sum (or mean) of completion log-probs; at least float32 so bf16 sums keep their precision.
    n_tokens : LongTensor, shape (B,)
        Number of completion tokens counted in each sequence.
    """
    logits = logits[:, :-1]  # (B, T-1, V) position t predicts token t+1
    labels = labels[:, 1:]  # (B, T-1)
    mask = labels != ignore_index  # (B, T-1)
    safe_labels = labels.masked_fill(~mask, 0)  # (B, T-1) gather needs an index in range
    token_logps = selective_logps(logits, safe_labels).masked_fill(~mask, 0.0)  # (B, T-1)
    token_logps = token_logps.to(torch.promote_types(token_logps.dtype, torch.float32))
    logps = token_logps.sum(-1)  # (B,)
    n_tokens = mask.sum(-1)  # (B,)
    if average:
        logps = logps / n_tokens.clamp(min=1)  # (B,)
    return logps, n_tokens


def sft_loss(logps: Tensor, n_tokens: Tensor, reduction: str = "token_mean") -> Tensor:
    """Negative log-likelihood of the target completions, the seed's ``L(θ) = Σ_i −log P(y_i | x_i; θ)``.

    Parameters
    ----------
    logps, n_tokens : Tensor, shape (B,)
        Summed completion log-probs and token counts from ``sequence_logps(..., average=False)``.
    reduction : {"token_mean", "sum", "sequence_mean"}
        ``"sum"``: ``Σ_i −log P(y_i|x_i)`` exactly, a scalar. ``"token_mean"``: divided by the
        total completion tokens ``Σ_i n_i`` (what training uses: every token weighs the same, and
        the scale does not depend on the batch). ``"sequence_mean"``: divided by ``B``.
    """
    total_nll = -logps.sum()
    if reduction == "sum":
        return total_nll
    if reduction == "token_mean":
        return total_nll / n_tokens.sum().clamp(min=1)
    if reduction == "sequence_mean":
        return total_nll / max(logps.numel(), 1)
    raise ValueError(f"reduction must be 'token_mean', 'sum' or 'sequence_mean', not {reduction!r}")


def weighted_nll(logps: Tensor, total_tokens: int, weight: float = 1.0) -> Tensor:
    """An auxiliary term ``λ · Σ_i −log P(t_i | c_i) / N``: λ times the mean NLL per token.

    For feedback modelling, ``t_i`` is a critique and ``c_i`` its prompt and answer
    (``λ·NLL(critique | prompt, answer)``, RLTF / Critique Fine-Tuning); for hindsight examples
    in a DPO or KTO step, the sample given "prompt + the feedback it got" (λ = 1). It is added to
    the objective's batch-mean loss, so ``N`` counts the target tokens of *all* the term's
    examples in the step: a term split over several passes sums to the one-pass value.

    Parameters
    ----------
    logps : Tensor, shape (B,)
        Summed target log-probs of (some of) the term's examples, ``sequence_logps(...)[0]``.
    total_tokens : int
        Target tokens of all the term's examples in the step (≥ 1 is used).
    weight : float
        λ ≥ 0.
    """
    return weight * -logps.sum() / max(int(total_tokens), 1)


class DPOOutput(NamedTuple):
    losses: Tensor  # (B,) per-pair loss; the training loss is losses.mean()
    chosen_rewards: Tensor  # (B,) β (logπ − logπ_ref) of the chosen completion, detached
    rejected_rewards: Tensor  # (B,) same for the rejected completion, detached
    margins: Tensor  # (B,) chosen_rewards − rejected_rewards
    accuracies: Tensor  # (B,) 1.0 where the chosen reward is the larger, else 0.0


# One function per DPO variant, each of h = (logπ(y_w) − logπ_ref(y_w)) − (logπ(y_l) − logπ_ref(y_l)).
def _sigmoid(h: Tensor, beta: float, eps: float) -> Tensor:
    # DPO; with eps > 0 the conservative cDPO: labels are believed right with probability 1 − eps
    return -(1 - eps) * F.logsigmoid(beta * h) - eps * F.logsigmoid(-beta * h)


def _robust(h: Tensor, beta: float, eps: float) -> Tensor:
    # rDPO: an unbiased loss under labels flipped with probability eps
    return ((1 - eps) * -F.logsigmoid(beta * h) + eps * F.logsigmoid(-beta * h)) / (1 - 2 * eps)


def _hinge(h: Tensor, beta: float, eps: float) -> Tensor:
    return torch.relu(1 - beta * h)  # SLiC


def _ipo(h: Tensor, beta: float, eps: float) -> Tensor:
    return (h - 1 / (2 * beta)) ** 2  # IPO Eq. 17; β is the paper's τ


_DPO_LOSSES = {"sigmoid": _sigmoid, "robust": _robust, "hinge": _hinge, "ipo": _ipo}
_SMOOTHED = {"sigmoid", "robust"}  # the variants that read label_smoothing


def dpo_loss(
    policy_chosen: Tensor, policy_rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor,
    beta: float = 0.1, label_smoothing: float = 0.0, loss_type: str = "sigmoid",
) -> DPOOutput:
    """Direct Preference Optimization loss for pairs (chosen y_w ≻ rejected y_l).

    With ``h = (logπ(y_w) − logπ_ref(y_w)) − (logπ(y_l) − logπ_ref(y_l))`` and ``ε = label_smoothing``:

    - ``"sigmoid"``: ``−(1−ε) log σ(βh) − ε log σ(−βh)`` (DPO; conservative DPO when ε > 0)
    - ``"robust"``:  ``(−(1−ε) log σ(βh) + ε log σ(−βh)) / (1 − 2ε)`` (robust DPO)
    - ``"hinge"``:   ``max(0, 1 − βh)``
    - ``"ipo"``:     ``(h − 1/(2β))²``. TRL's IPO divides each log-ratio by its completion's
      token count; pass per-token means (``sequence_logps(..., average=True)``) to get that.

    Parameters
    ----------
    policy_chosen, policy_rejected, ref_chosen, ref_rejected : Tensor, shape (B,)
        Completion log-probs. The reference ones are detached: the base model is not trained.
    beta : float
        Strength of the pull towards the reference (higher: stay closer).
    label_smoothing : float
        ε in [0, 0.5), read by "sigmoid" and "robust" only.
    loss_type : {"sigmoid", "robust", "hinge", "ipo"}
    """
    if loss_type not in _DPO_LOSSES:
        raise ValueError(f"loss_type must be one of {sorted(_DPO_LOSSES)}, not {loss_type!r}")
    if beta <= 0:
        raise ValueError(f"beta must be positive, not {beta}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), not {label_smoothing}")
    if label_smoothing and loss_type not in _SMOOTHED:
        raise ValueError(f"loss_type {loss_type!r} does not use label_smoothing")
    chosen_ratio = policy_chosen - ref_chosen.detach()  # (B,)
    rejected_ratio = policy_rejected - ref_rejected.detach()  # (B,)
    losses = _DPO_LOSSES[loss_type](chosen_ratio - rejected_ratio, beta, label_smoothing)  # (B,)
    chosen_rewards = beta * chosen_ratio.detach()  # (B,)
    rejected_rewards = beta * rejected_ratio.detach()  # (B,)
    accuracies = (chosen_rewards > rejected_rewards).to(chosen_rewards.dtype)  # (B,)
    return DPOOutput(losses, chosen_rewards, rejected_rewards, chosen_rewards - rejected_rewards, accuracies)


class KTOOutput(NamedTuple):
    losses: Tensor  # (Nc + Nr,) weighted, chosen first; the training loss is losses.mean()
    chosen_rewards: Tensor  # (Nc,) β (logπ − logπ_ref), detached
    rejected_rewards: Tensor  # (Nr,) same, detached
    kl: Tensor  # () the batch KL estimate z₀, detached and ≥ 0


def kto_kl_estimate(policy_kl_logps: Tensor, ref_kl_logps: Tensor) -> Tensor:
    """KTO's reference point ``z₀ = max(0, mean_j (logπ(y'_j|x_j) − logπ_ref(y'_j|x_j)))``.

    ``y'_j`` is a completion of another prompt in the batch (mismatched pairs), so the mean
    estimates KL(π ‖ π_ref) without using the very completions being rewarded. Detached, as in
    the paper: it is a baseline, not something to optimise. 0 for an empty batch.

    `policy_kl_logps` and `ref_kl_logps` have shape (N,); the result is a scalar.
    """
    if policy_kl_logps.numel() == 0:  # the mean of nothing is NaN, which would poison every loss
        return policy_kl_logps.new_zeros(())
    return (policy_kl_logps - ref_kl_logps).mean().clamp(min=0).detach()


def kto_loss(
    policy_chosen: Tensor, policy_rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor,
    policy_kl: Tensor | None, ref_kl: Tensor | None,
    beta: float = 0.1, desirable_weight: float = 1.0, undesirable_weight: float = 1.0,
    kl: Tensor | None = None,
) -> KTOOutput:
    """Kahneman–Tversky Optimization loss for unpaired good (chosen) and bad (rejected) completions.

    With ``r = logπ(y|x) − logπ_ref(y|x)`` and ``z₀ = kto_kl_estimate(policy_kl, ref_kl)``:

    - desirable:   ``λ_D (1 − σ(β (r − z₀)))``
    - undesirable: ``λ_U (1 − σ(β (z₀ − r)))``

    Parameters
    ----------
    policy_chosen, ref_chosen : Tensor, shape (Nc,)
        Log-probs of the desirable completions (Nc may be 0).
    policy_rejected, ref_rejected : Tensor, shape (Nr,)
        Log-probs of the undesirable completions (Nr may be 0).
    policy_kl, ref_kl : Tensor, shape (N,)
        Log-probs of mismatched prompt/completion pairs, for the KL estimate.
    desirable_weight, undesirable_weight : float
        λ_D and λ_U; raise the rarer kind so that λ_D·Nc / (λ_U·Nr) lies in about [1, 4/3].
    kl : Tensor, shape (), optional
        A z₀ computed beforehand (the trainer estimates it once for a batch it then splits into
        passes); `policy_kl` and `ref_kl` are then unused and may be None.
    """
    if kl is None:
        if policy_kl is None or ref_kl is None:
            raise ValueError("kto_loss needs policy_kl and ref_kl, or a precomputed kl")
        kl = kto_kl_estimate(policy_kl, ref_kl)
    kl = kl.detach()
    chosen_ratio = policy_chosen - ref_chosen.detach()  # (Nc,)
    rejected_ratio = policy_rejected - ref_rejected.detach()  # (Nr,)
    chosen_losses = 1 - torch.sigmoid(beta * (chosen_ratio - kl))  # (Nc,)
    rejected_losses = 1 - torch.sigmoid(beta * (kl - rejected_ratio))  # (Nr,)
    losses = torch.cat([desirable_weight * chosen_losses, undesirable_weight * rejected_losses])
    return KTOOutput(losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach(), kl)
