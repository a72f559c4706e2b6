"""Losses against hand-computed numbers (plain `math`) and against TRL's own code paths."""

import math
import types
from collections import defaultdict

import pytest
import torch
from trl import DPOTrainer, KTOTrainer
from trl.trainer.utils import selective_log_softmax

from lf_widgets.losses import dpo_loss, kto_kl_estimate, kto_loss, selective_logps, sequence_logps, sft_loss

F64 = torch.float64


def _log_softmax(row):
    top = max(row)
    lse = top + math.log(sum(math.exp(v - top) for v in row))
    return [v - lse for v in row]


def _softplus(x):  # −log σ(−x)
    return math.log1p(math.exp(x))


def _sigmoid(x):
    return 1 / (1 + math.exp(-x))


def _t(*values):
    return torch.tensor(values, dtype=F64)


# ---------------------------------------------------------------- log-probs


def test_sequence_logps_by_hand_with_prompt_and_padding():
    logits = [
        [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0], [2.0, 2.0, -2.0], [99.0, -99.0, 5.0]],
        [[0.3, 0.1, 0.2], [-1.0, 4.0, 0.0], [7.0, 7.0, 7.0], [1.0, 2.0, 3.0]],
    ]
    # row 0: 1 prompt token, 3 completion tokens; row 1: 2 prompt tokens, 1 completion, 1 padding
    labels = [[-100, 2, 0, 1], [-100, -100, 1, -100]]
    row0 = _log_softmax(logits[0][0])[2] + _log_softmax(logits[0][1])[0] + _log_softmax(logits[0][2])[1]
    row1 = _log_softmax(logits[1][1])[1]

    logps, n_tokens = sequence_logps(torch.tensor(logits, dtype=F64), torch.tensor(labels))
    assert n_tokens.tolist() == [3, 1]
    assert logps.tolist() == pytest.approx([row0, row1], abs=1e-12)

    means, _ = sequence_logps(torch.tensor(logits, dtype=F64), torch.tensor(labels), average=True)
    assert means.tolist() == pytest.approx([row0 / 3, row1], abs=1e-12)


def test_sequence_logps_no_completion_tokens_is_zero():
    logps, n_tokens = sequence_logps(torch.randn(2, 4, 5), torch.full((2, 4), -100), average=True)
    assert logps.tolist() == [0.0, 0.0] and n_tokens.tolist() == [0, 0]


def test_sequence_logps_gradient_only_reaches_predicting_positions():
    logits = torch.randn(1, 4, 5, requires_grad=True)
    logps, _ = sequence_logps(logits, torch.tensor([[-100, -100, 3, -100]]))
    logps.sum().backward()
    touched = logits.grad.abs().sum(-1)[0]  # (T,)
    assert touched[1] > 0  # position 1 predicts the one completion token
    assert touched[[0, 2, 3]].tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_selective_logps_matches_trl(dtype):
    gen = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(3, 7, 50, generator=gen, dtype=F64)).to(dtype)
    labels = torch.randint(0, 50, (3, 7), generator=gen)
    ours = selective_logps(logits, labels)
    assert ours.dtype == dtype
    torch.testing.assert_close(ours, selective_log_softmax(logits, labels), atol=1e-6, rtol=1e-6)
    naive = logits.double().log_softmax(-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(ours.double(), naive, atol=1e-5, rtol=1e-5)


def test_selective_logps_bfloat16_close_to_trl_and_exact_math():
    gen = torch.Generator().manual_seed(1)
    exact = 3 * torch.randn(3, 7, 50, generator=gen, dtype=F64)
    logits, labels = exact.to(torch.bfloat16), torch.randint(0, 50, (3, 7), generator=gen)
    ours = selective_logps(logits, labels)
    assert ours.dtype == torch.bfloat16
    torch.testing.assert_close(ours, selective_log_softmax(logits, labels), atol=1e-2, rtol=1e-2)
    naive = exact.log_softmax(-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(ours.double(), naive, atol=0.1, rtol=2e-2)
    summed, _ = sequence_logps(logits, labels)
    assert summed.dtype == torch.float32  # sums are not kept in bf16


# ---------------------------------------------------------------- SFT


def test_sft_loss_reductions():
    logps, n_tokens = _t(-3.0, -1.5), torch.tensor([3, 1])
    assert sft_loss(logps, n_tokens, "sum").item() == pytest.approx(4.5)
    assert sft_loss(logps, n_tokens, "token_mean").item() == pytest.approx(4.5 / 4)
    assert sft_loss(logps, n_tokens, "sequence_mean").item() == pytest.approx(4.5 / 2)
    with pytest.raises(ValueError):
        sft_loss(logps, n_tokens, "mean")


# ---------------------------------------------------------------- DPO by hand


def test_dpo_sigmoid_by_hand():
    # pair 0: h = (−10 + 11) − (−12 + 11) = 2; pair 1: h = (−5 + 4) − (−5 + 6) = −2
    out = dpo_loss(_t(-10, -5), _t(-12, -5), _t(-11, -4), _t(-11, -6), beta=0.1)
    assert out.losses.tolist() == pytest.approx([_softplus(-0.2), _softplus(0.2)], abs=1e-12)
    assert out.chosen_rewards.tolist() == pytest.approx([0.1, -0.1])
    assert out.rejected_rewards.tolist() == pytest.approx([-0.1, 0.1])
    assert out.margins.tolist() == pytest.approx([0.2, -0.2])
    assert out.accuracies.tolist() == [1.0, 0.0]


def test_dpo_conservative_label_smoothing_by_hand():
    out = dpo_loss(_t(-10), _t(-12), _t(-11), _t(-11), beta=0.1, label_smoothing=0.2)
    assert out.losses.item() == pytest.approx(0.8 * _softplus(-0.2) + 0.2 * _softplus(0.2), abs=1e-12)


def test_dpo_ipo_by_hand():
    out = dpo_loss(_t(-10), _t(-12), _t(-11), _t(-11), beta=0.1, loss_type="ipo")
    assert out.losses.item() == pytest.approx((2 - 1 / (2 * 0.1)) ** 2, abs=1e-12)


def test_dpo_rejects_bad_options():
    args = (_t(-1), _t(-2), _t(-1), _t(-1))
    bad = [{"loss_type": "kto"}, {"beta": 0.0}, {"label_smoothing": 0.5}, {"loss_type": "ipo", "label_smoothing": 0.1}]
    for kwargs in bad:
        with pytest.raises(ValueError):
            dpo_loss(*args, **kwargs)


# ---------------------------------------------------------------- KTO by hand


def test_kto_by_hand_with_known_kl():
    kl = ((-20 + 20.5) + (-21 + 21.3)) / 2  # 0.4
    out = kto_loss(_t(-5), _t(-7, -8), _t(-6), _t(-6.5, -8), _t(-20, -21), _t(-20.5, -21.3),
                   beta=0.5, desirable_weight=2.0, undesirable_weight=1.0)
    expected = [2 * (1 - _sigmoid(0.5 * (1 - kl))), 1 - _sigmoid(0.5 * (kl + 0.5)), 1 - _sigmoid(0.5 * kl)]
    assert out.kl.item() == pytest.approx(kl)
    assert out.losses.tolist() == pytest.approx(expected, abs=1e-12)
    assert out.chosen_rewards.tolist() == pytest.approx([0.5])
    assert out.rejected_rewards.tolist() == pytest.approx([-0.25, 0.0])


def test_kto_with_a_precomputed_kl_matches():
    args = (_t(-5), _t(-7, -8), _t(-6), _t(-6.5, -8))
    estimated = kto_loss(*args, _t(-20, -21), _t(-20.5, -21.3), beta=0.5)
    given = kto_loss(*args, None, None, beta=0.5, kl=kto_kl_estimate(_t(-20, -21), _t(-20.5, -21.3)))
    assert given.losses.tolist() == pytest.approx(estimated.losses.tolist(), abs=1e-12)
    assert given.kl.item() == pytest.approx(0.4)
    with pytest.raises(ValueError, match="precomputed kl"):
        kto_loss(*args, None, None)


def test_kto_negative_kl_is_clamped_to_zero():
    assert kto_kl_estimate(_t(-21, -20), _t(-20, -20.5)).item() == 0.0  # mean −0.25
    out = kto_loss(_t(-5), _t(), _t(-6), _t(), _t(-21, -20), _t(-20, -20.5), beta=0.5)
    assert out.losses.tolist() == pytest.approx([1 - _sigmoid(0.5)], abs=1e-12)


def test_kto_empty_chosen_or_rejected():
    only_bad = kto_loss(_t(), _t(-7), _t(), _t(-6), _t(-3), _t(-3), beta=0.1)
    assert only_bad.chosen_rewards.shape == (0,) and only_bad.losses.shape == (1,)
    assert only_bad.losses.item() == pytest.approx(1 - _sigmoid(0.1 * (0 + 1)))
    only_good = kto_loss(_t(-5), _t(), _t(-6), _t(), _t(-3), _t(-3), beta=0.1)
    assert only_good.rejected_rewards.shape == (0,) and only_good.losses.shape == (1,)
    assert only_good.losses.item() == pytest.approx(1 - _sigmoid(0.1 * 1))
    assert kto_kl_estimate(_t(), _t()).item() == 0.0  # not NaN


# ---------------------------------------------------------------- gradients


def test_dpo_gradients_reach_policy_not_reference():
    policy = [_t(-10.0, -4.0).requires_grad_(), _t(-12.0, -3.0).requires_grad_()]
    ref = [_t(-11.0, -4.5).requires_grad_(), _t(-11.0, -3.5).requires_grad_()]
    for loss_type in ("sigmoid", "ipo"):
        dpo_loss(*policy, *ref, loss_type=loss_type).losses.mean().backward()
        for p in policy:
            assert torch.isfinite(p.grad).all() and (p.grad != 0).all()
            p.grad = None
        assert all(r.grad is None for r in ref)


def test_kto_gradients_reach_policy_not_reference():
    policy = [_t(-5.0).requires_grad_(), _t(-7.0).requires_grad_()]
    ref = [_t(-6.0).requires_grad_(), _t(-6.5).requires_grad_()]
    kl = [_t(-20.0, -21.0).requires_grad_(), _t(-20.5, -21.3).requires_grad_()]
    kto_loss(*policy, *ref, *kl).losses.mean().backward()
    assert all(torch.isfinite(p.grad).all() and (p.grad != 0).all() for p in policy)
    assert all(t.grad is None for t in ref + kl)  # the KL estimate is a detached baseline


# ---------------------------------------------------------------- parity with TRL
# TRL >= 1.0 has no standalone `dpo_loss` / `kto_loss` methods: the losses live inside
# `_compute_loss(model, inputs, return_outputs)`. We run that real code on a stand-in trainer whose
# "model" returns fixed per-token log-probs, with precomputed reference log-probs in the inputs.

_ACCELERATOR = types.SimpleNamespace(
    device=torch.device("cpu"), gather=lambda x: x, gather_for_metrics=lambda x: x, unwrap_model=lambda m: m
)


class _FixedLogpsModel:
    """Fused-LM-head output whose completion log-probs sum to fixed values, chosen by the first input id."""

    training = True

    def __init__(self, logps_by_first_id):
        self.logps_by_first_id = logps_by_first_id

    def __call__(self, input_ids, **kwargs):
        logps = self.logps_by_first_id[int(input_ids[0, 0])]
        per_token = torch.zeros(input_ids.shape[0], input_ids.shape[1] - 1, dtype=logps.dtype)  # (B, T-1)
        per_token[:, -1] = logps
        zeros = torch.zeros_like(per_token)
        return types.SimpleNamespace(log_probs=per_token, entropy=zeros, mean_logits=zeros, is_top1=zeros.bool())


def _stand_in(model, **attributes):
    metrics = defaultdict(lambda: defaultdict(list))
    return types.SimpleNamespace(
        model=model, accelerator=_ACCELERATOR, aux_loss_enabled=False, precompute_ref_logps=True,
        _metrics=metrics, _total_train_tokens=0, _tp_size=1, **attributes,
    )


def _trl_dpo(pc, pr, rc, rr, n_chosen, n_rejected, beta, loss_type, label_smoothing):
    counts = torch.cat([n_chosen, n_rejected])  # (2B,) batch is [chosen, rejected]
    width = int(counts.max()) + 1
    inputs = {
        "input_ids": torch.ones(len(counts), width, dtype=torch.long),
        "attention_mask": torch.ones(len(counts), width, dtype=torch.long),
        "completion_mask": (torch.arange(width) < counts[:, None]).long(),  # only the counts matter here
        "ref_chosen_logps": rc,
        "ref_rejected_logps": rr,
    }
    model = _FixedLogpsModel({1: torch.cat([pc, pr])})
    trainer = _stand_in(
        model, ld_alpha=None, f_divergence_type="reverse_kl", loss_types=[loss_type], loss_weights=[1.0],
        beta=beta, label_smoothing=label_smoothing, use_weighting=False, args=types.SimpleNamespace(),
    )
    loss = DPOTrainer._compute_loss(trainer, model, inputs, return_outputs=False)
    return loss, trainer._metrics["train"]


@pytest.mark.parametrize(
    "loss_type,label_smoothing", [("sigmoid", 0.0), ("hinge", 0.0), ("ipo", 0.0), ("robust", 0.1)]
)
def test_dpo_matches_trl(loss_type, label_smoothing):
    gen = torch.Generator().manual_seed(2)
    sums = [-40 * torch.rand(6, generator=gen, dtype=F64) for _ in range(4)]  # pc, pr, rc, rr
    n_chosen, n_rejected = torch.randint(1, 30, (2, 6), generator=gen)
    means = [x / n for x, n in zip(sums, (n_chosen, n_rejected, n_chosen, n_rejected))]
    beta = 0.3
    # TRL's IPO divides each log-ratio by its completion's length: the same as feeding per-token means
    ours = dpo_loss(*(means if loss_type == "ipo" else sums), beta, label_smoothing, loss_type)
    rewards = dpo_loss(*sums, beta=beta)  # TRL logs rewards of the summed log-probs, whatever the loss
    pc, pr, rc, rr = sums
    for i in range(6):
        pair = slice(i, i + 1)
        loss, _ = _trl_dpo(pc[pair], pr[pair], rc[pair], rr[pair], n_chosen[pair], n_rejected[pair],
                           beta, loss_type, label_smoothing)
        assert ours.losses[i].item() == pytest.approx(loss.item(), abs=1e-6)
    loss, metrics = _trl_dpo(pc, pr, rc, rr, n_chosen, n_rejected, beta, loss_type, label_smoothing)
    assert ours.losses.mean().item() == pytest.approx(loss.item(), abs=1e-6)
    assert rewards.chosen_rewards.mean().item() == pytest.approx(metrics["rewards/chosen"][-1], abs=1e-6)
    assert rewards.rejected_rewards.mean().item() == pytest.approx(metrics["rewards/rejected"][-1], abs=1e-6)
    assert rewards.margins.mean().item() == pytest.approx(metrics["rewards/margins"][-1], abs=1e-6)
    assert rewards.accuracies.mean().item() == pytest.approx(metrics["rewards/accuracies"][-1], abs=1e-6)


def _trl_kto(policy, ref, labels, policy_kl, ref_kl, beta, desirable_weight, undesirable_weight):
    n, m = len(policy), len(policy_kl)
    inputs = {
        "label": labels,
        "input_ids": torch.ones(n, 2, dtype=torch.long),
        "attention_mask": torch.ones(n, 2, dtype=torch.long),
        "completion_mask": torch.ones(n, 2, dtype=torch.long),
        "KL_input_ids": torch.full((m, 2), 2, dtype=torch.long),  # first id 2: the model answers policy_kl
        "KL_attention_mask": torch.ones(m, 2, dtype=torch.long),
        "KL_completion_mask": torch.ones(m, 2, dtype=torch.long),
        "ref_logps": ref,
        "ref_KL_logps": ref_kl,
    }
    model = _FixedLogpsModel({1: policy, 2: policy_kl})
    trainer = _stand_in(model, calculate_KL=True, loss_type="kto", beta=beta,
                        desirable_weight=desirable_weight, undesirable_weight=undesirable_weight)
    trainer._compute_kl_logps = types.MethodType(KTOTrainer._compute_kl_logps, trainer)
    loss = KTOTrainer._compute_loss(trainer, model, inputs, return_outputs=False)
    return loss, trainer._metrics["train"]


@pytest.mark.parametrize("kl_shift,labels", [
    (0.5, [1, 0, 0, 1, 1, 0, 1]),   # KL estimate > 0
    (-0.5, [1, 0, 0, 1, 1, 0, 1]),  # KL estimate < 0, clamped
    (0.5, [1, 1, 1]),               # no undesirable example
    (0.5, [0, 0]),                  # no desirable example
])
def test_kto_matches_trl(kl_shift, labels):
    gen = torch.Generator().manual_seed(3)
    labels = torch.tensor(labels, dtype=torch.bool)
    policy, ref = (-40 * torch.rand(len(labels), generator=gen, dtype=F64) for _ in range(2))
    ref_kl = -40 * torch.rand(5, generator=gen, dtype=F64)
    policy_kl = ref_kl + kl_shift + 0.1 * torch.randn(5, generator=gen, dtype=F64)
    beta, weights = 0.2, (1.3, 0.7)
    ours = kto_loss(policy[labels], policy[~labels], ref[labels], ref[~labels], policy_kl, ref_kl, beta, *weights)

    order = torch.cat([labels.nonzero().view(-1), (~labels).nonzero().view(-1)])  # ours: chosen first
    for j, i in enumerate(order.tolist()):
        one = slice(i, i + 1)
        loss, _ = _trl_kto(policy[one], ref[one], labels[one], policy_kl, ref_kl, beta, *weights)
        assert ours.losses[j].item() == pytest.approx(loss.item(), abs=1e-6)
    loss, metrics = _trl_kto(policy, ref, labels, policy_kl, ref_kl, beta, *weights)
    assert ours.losses.mean().item() == pytest.approx(loss.item(), abs=1e-6)
    assert ours.kl.item() == pytest.approx(metrics["kl"][-1], abs=1e-6)
    if labels.any():
        assert ours.chosen_rewards.mean().item() == pytest.approx(metrics["rewards/chosen"][-1], abs=1e-6)
    if not labels.all():
        assert ours.rejected_rewards.mean().item() == pytest.approx(metrics["rewards/rejected"][-1], abs=1e-6)
