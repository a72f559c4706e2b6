"""Step by step: one sample, its token probabilities, one optimizer step, and what changed.

The teaching view of training ("here is the loss, here is one step, see the probability of the
good answer go up"). Every number comes from the code the trainer runs: the same chat prompt
ids and collation (``data``), the same step (``trainer.train_step``), the
same losses (``losses``), the same LoRA adapter (``adapters.wrap_lora``), the same reference cache,
on the same model thread. What differs: a batch of one example, a fresh optimizer for each step,
and a larger learning rate, so that one step visibly moves the numbers.

A step here is a real step: it changes the session's adapter and counts in
the model's adapter step, exactly like a training step.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from . import data as _data
from .sampling import chat_prompt_ids
from .losses import kto_loss, selective_logps
from .batching import collate_kto, collate_sft
from .feedback import prompt_of
from .step import forward_logps, to_device, train_step
from .trainer import TrainConfig

__all__ = ["TokenProb", "StepReport", "DPOReport", "KTOView", "SampleStepper", "TEACHING_LR",
           "sample_tokens", "token_probabilities", "sft_step_on", "dpo_step_on", "kto_view"]

# Plain SGD: θ ← θ − lr·g (momentum has nothing to act on in a fresh optimizer's first step).
# 0.1 roughly halves the loss of a short answer on SmolLM2-135M in one step; training's 2e-4
# with AdamW would move it by a hundredth, too little to see.
TEACHING_LR = 0.1


@dataclass(frozen=True)
class TokenProb:
    """One completion token and how likely the model finds it, given everything before it."""

    token_text: str  # the token as text, decoded in context ("" for half of a multi-byte character)
    token_id: int
    prob: float  # P(token | prompt, earlier tokens), in (0, 1]
    logp: float  # natural log of prob, ≤ 0


def loss_of(tokens: Sequence[TokenProb]) -> float:
    """The seed's loss for one sample, ``L = Σ −log p`` over its tokens, in nats."""
    return -sum(t.logp for t in tokens)


@dataclass(frozen=True)
class StepReport:
    """One SFT step on one sample: the token probabilities and the loss before and after it."""

    before: tuple[TokenProb, ...]
    after: tuple[TokenProb, ...]
    loss_before: float  # Σ −log p before the step (nats)
    loss_after: float  # the same after the step
    lr: float  # the step size used
    grad_norm: float  # gradient length before clipping (then clipped to max_grad_norm, as in training)
    skipped: bool = False  # True: the loss or gradient was not finite, the weights did not move
    note: str = ""

    @property
    def delta_logp(self) -> list[float]:
        """Per token: log p after − log p before (> 0: the step made that token more likely)."""
        return [a.logp - b.logp for b, a in zip(self.before, self.after)]

    def sentence(self) -> str:
        if self.skipped:
            return f"The step was skipped ({self.note}); nothing changed."
        n = max(len(self.before), 1)
        return (f"One step with lr={self.lr:g}: L went from {self.loss_before:.3f} to "
                f"{self.loss_after:.3f} nats ({self.loss_before / n:.3f} → "
                f"{self.loss_after / n:.3f} per token).")


@dataclass(frozen=True)
class DPOReport:
    """One DPO step on one pair. Rewards are β (log π − log π_ref) of each answer."""

    loss_before: float  # −log σ(margin), before the step
    loss_after: float
    chosen_reward_before: float
    chosen_reward_after: float
    rejected_reward_before: float
    rejected_reward_after: float
    lr: float
    beta: float  # strength of the pull towards the base model
    grad_norm: float
    skipped: bool = False
    note: str = ""

    @property
    def margin_before(self) -> float:
        """Chosen reward − rejected reward before the step (> 0: the model prefers the chosen)."""
        return self.chosen_reward_before - self.rejected_reward_before

    @property
    def margin_after(self) -> float:
        return self.chosen_reward_after - self.rejected_reward_after

    def sentence(self) -> str:
        return (f"One DPO step with lr={self.lr:g}, beta={self.beta:g}: reward margin "
                f"{self.margin_before:+.4f} → {self.margin_after:+.4f}, loss "
                f"{self.loss_before:.4f} → {self.loss_after:.4f}.")


@dataclass(frozen=True)
class KTOView:
    """What KTO makes of one judged answer, without changing anything."""

    desirable: bool  # thumbs up (True) or thumbs down (False)
    policy_logp: float  # log π(y|x): the model with its adapter
    reference_logp: float  # log π_ref(y|x): the base model (adapter off)
    reward: float  # β (log π − log π_ref)
    kl: float  # the reference point z₀ (a batch of one: its own log-ratio, clipped at 0)
    loss: float  # this answer's term: 1 − σ(β(z₀ − r)) for a thumbs-down, 1 − σ(β(r − z₀)) for up
    dloss_dlogp: float  # ∂loss/∂log π(y|x): > 0 means a step lowers this answer's probability
    beta: float

    def sentence(self) -> str:
        way = "lowers" if self.dloss_dlogp > 0 else "raises"
        kind = "thumbs-up" if self.desirable else "thumbs-down"
        return (f"KTO on a {kind}: reward {self.reward:+.4f}, reference point z0 = {self.kl:.4f}, "
                f"loss term {self.loss:.4f}; dL/dlog p = {self.dloss_dlogp:+.4f}, so a step "
                f"{way} the probability of this answer.")


# -- helpers (on the model's thread) -------------------------------------------------------------
def _owner(source):
    """The model owner of a Session (the verbs below take either)."""
    return source.model if hasattr(source, "store") and hasattr(source, "annotator") else source


def sample_tokens(source, sample, store=None) -> tuple[str, list[int]]:
    """The prompt and completion token ids of a stored sample, exactly as training builds them.

    ``source`` is a Session (or a LocalModel, with ``store``); ``sample`` is a
    :class:`~lf_widgets.session.Sample` or a sample id. The ids are the stored generated ones;
    imported text is tokenized the way ``data.build_examples`` does it.
    """
    owner, store = _owner(source), store if store is not None else source.store
    sample_id = int(getattr(sample, "sample_id", sample))
    rows = {int(r.sample_id): r for r in store.samples().itertuples(index=False)
            if int(r.sample_id) == sample_id}
    if not rows:
        raise KeyError(f"no sample {sample_id} in {store.path}")
    def job():
        prompt_ids, completion_ids = _data.sample_example_ids(owner.tokenizer, rows[sample_id])
        return prompt_of(rows[sample_id]), list(completion_ids)

    return owner.call(job, name="tokenise")


def _one_step(owner, objective: str, examples, config: TrainConfig):
    """One step of the trainer's own ``train_step`` on this batch, with a fresh optimizer."""
    import dataclasses

    import torch

    owner.ensure_adapter(config)  # a fresh adapter starts at zero: nothing changes yet
    model, params = owner.model, owner.trainable_parameters()
    make = {"sgd": lambda: torch.optim.SGD(params, lr=config.lr),
            "adamw": lambda: torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0),
            "rmsprop": lambda: torch.optim.RMSprop(params, lr=config.lr)}[config.optimizer]
    config = dataclasses.replace(config, pass_tokens=config.pass_tokens or 0)
    model.train()
    try:
        result = train_step(model, objective, examples, pad_id=owner.pad_id, device=owner.device,
                            cache=owner.reference_cache, config=config, params=params,
                            optimizer=make())
    finally:
        model.eval()
    if not result.skipped:
        owner.count_update()
    return result


def _probabilities(owner, prompt: str, completion_ids: Sequence[int]) -> list[TokenProb]:
    tok = owner.tokenizer
    prompt_ids = chat_prompt_ids(tok, prompt)
    batch = to_device(collate_sft([_sft_example(prompt, prompt_ids, completion_ids)], owner.pad_id),
                      owner.device)
    n_prompt = len(prompt_ids)
    model = owner.model
    with torch.no_grad():
        model.eval()
        logits = model(input_ids=batch["input_ids"],
                       attention_mask=batch["attention_mask"]).logits  # (1, T, V)
        # position t predicts token t + 1: the completion's tokens are predicted from n_prompt − 1 on
        logps = selective_logps(logits[:, n_prompt - 1:-1].float(),
                                batch["input_ids"][:, n_prompt:])[0].tolist()  # (n,)
    ids = [int(t) for t in completion_ids]
    return [TokenProb(text, i, math.exp(lp), lp) for text, i, lp in zip(_token_texts(tok, ids), ids, logps)]


# -- the verbs (any thread: the work runs on the model's thread) ---------------------------------
def token_probabilities(source, prompt: str, completion_ids: Sequence[int]) -> list[TokenProb]:
    """P(token | prompt, earlier tokens) for each completion token, with the adapter on if any.

    In eval mode, without gradients. The log-probs sum to what ``losses.sequence_logps`` gives
    for the same sequence (the trainer's ``log π(y|x)``).
    """
    owner = _owner(source)
    return owner.call(lambda: _probabilities(owner, prompt, completion_ids), name="probabilities")


def sft_step_on(source, prompt: str, completion_ids: Sequence[int], *, lr: float = TEACHING_LR,
                optimizer: str = "sgd", **options) -> StepReport:
    """Exactly one SFT optimizer step on one sample; the probabilities before and after.

    The step is the trainer's (``train_step``: token-mean ``sft_loss``, gradient clipped to
    ``max_grad_norm``) on a batch of this one example, with a fresh ``optimizer`` at ``lr``.
    ``options`` go to :class:`~lf_widgets.trainer.TrainConfig` (``lora_r``, ``max_grad_norm`` …).
    """
    owner = _owner(source)
    config = TrainConfig(objective="sft", lr=lr, optimizer=optimizer, **options)

    def job():
        example = _sft_example(prompt, chat_prompt_ids(owner.tokenizer, prompt), completion_ids)
        owner.ensure_adapter(config)
        before = _probabilities(owner, prompt, completion_ids)
        result = _one_step(owner, "sft", [example], config)
        after = _probabilities(owner, prompt, completion_ids)
        return StepReport(tuple(before), tuple(after), loss_of(before), loss_of(after), lr,
                          result.grad_norm, result.skipped, result.note)

    return owner.call(job, name="sft step")


def dpo_step_on(source, prompt: str, chosen_ids: Sequence[int], rejected_ids: Sequence[int], *,
                lr: float = TEACHING_LR, beta: float = 0.1, optimizer: str = "sgd",
                **options) -> DPOReport:
    """Exactly one DPO step on one pair (chosen ≻ rejected): rewards and margin before and after."""
    owner = _owner(source)
    # plain DPO unless asked: the step shown is the loss −log σ(β·margin) the notebook derives
    options.setdefault("nll_weight", 0.0)
    config = TrainConfig(objective="dpo", lr=lr, beta=beta, optimizer=optimizer, **options)

    def job():
        pair = _data.PairExample(prompt, chat_prompt_ids(owner.tokenizer, prompt), chosen_ids,
                                 rejected_ids, None, -1, "preference")  # ids unused: no stored pair
        result = _one_step(owner, "dpo", [pair], config)
        before = result.extras
        # the same numbers after the step: train_step without an optimizer only measures
        after = train_step(owner.model, "dpo", [pair], pad_id=owner.pad_id, device=owner.device,
                           cache=owner.reference_cache,
                           config=dataclasses.replace(config, pass_tokens=0))
        return DPOReport(result.loss, after.loss, before["chosen_reward"],
                         after.extras["chosen_reward"], before["rejected_reward"],
                         after.extras["rejected_reward"], lr, beta, result.grad_norm,
                         result.skipped, result.note)

    return owner.call(job, name="dpo step")


def kto_view(source, prompt: str, completion_ids: Sequence[int], *, desirable: bool = False,
             beta: float = 0.1, kl: float | None = None) -> KTOView:
    """What KTO would do with this answer judged good or bad (default: a thumbs-down); no step.

    ``kl`` sets the reference point z₀; None estimates it as training does for a batch of this
    one example (its own log-ratio, clipped at 0).
    """
    owner = _owner(source)
    def job():
        example = _data.KTOExample(prompt, chat_prompt_ids(owner.tokenizer, prompt),
                                   completion_ids, desirable, -1)
        owner.ensure_adapter(TrainConfig(objective="kto", beta=beta))
        batch = to_device(collate_kto([example], owner.pad_id), owner.device)
        ref = owner.reference_cache.get(owner.model, batch, [example.key]).cpu()  # (1,)
        with torch.no_grad():
            policy, _ = forward_logps(owner.model, batch)  # (1,) adapter on
        return policy.cpu(), ref

    policy, ref = owner.call(job, name="kto view")
    policy = policy.requires_grad_()  # a leaf, to read ∂loss/∂log π
    # z₀ from mismatched rows: a batch of one has none, so training uses its own row (collate_kto)
    kl_rows = (policy.detach(), ref) if kl is None else (torch.tensor([float(kl)]), torch.zeros(1))
    empty = policy.new_zeros(0)
    good, bad = (policy, empty) if desirable else (empty, policy)
    ref_good, ref_bad = (ref, empty) if desirable else (empty, ref)
    out = kto_loss(good, bad, ref_good, ref_bad, *kl_rows, beta=beta)
    out.losses.sum().backward()
    reward = (out.chosen_rewards if desirable else out.rejected_rewards).item()
    return KTOView(desirable, policy.item(), ref.item(), reward, out.kl.item(), out.losses.item(),
                   policy.grad.item(), beta)


class SampleStepper:
    """The kernel side of :class:`~lf_widgets.panels.stepper.StepperPanel`: one model, one sample.

    The panel imports no torch; it calls :meth:`probabilities` and :meth:`step` of this object.
    """

    def __init__(self, owner, store, sample, *, lr: float = TEACHING_LR, feedback: str | None = None,
                 **options):
        from ._goal import hindsight_prompt

        self.owner, self.lr, self.options = owner, lr, options
        self.prompt, self.completion_ids = sample_tokens(owner, sample, store)
        # a critique-conditioned example (hindsight training): the user turn carries the feedback
        # the answer got, and the step teaches "given this feedback, this answer"
        self.feedback = feedback
        if feedback is not None:
            self.prompt = hindsight_prompt(self.prompt, feedback)

    def probabilities(self) -> list[TokenProb]:
        return token_probabilities(self.owner, self.prompt, self.completion_ids)

    def step(self) -> StepReport:
        return sft_step_on(self.owner, self.prompt, self.completion_ids, lr=self.lr, **self.options)


def _sft_example(prompt: str, prompt_ids, completion_ids) -> _data.SFTExample:
    if not len(completion_ids):
        raise ValueError("the completion has no tokens: there is nothing to score")
    return _data.SFTExample(prompt, prompt_ids, completion_ids, -1, "rating")  # -1: not a stored sample


def _token_texts(tokenizer, ids: list[int]) -> list[str]:
    """Each token's text. A character split over several byte tokens shows whole on its last
    token (the others get ""), instead of as several "\ufffd"; invalid bytes still show as "\ufffd"."""
    texts, pending = [], []
    for i, token_id in enumerate(ids):
        pending.append(token_id)
        text = tokenizer.decode(pending, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        if "\ufffd" in text and len(pending) < 4 and i + 1 < len(ids):  # UTF-8: ≤ 4 bytes a character
            texts.append("")
            continue
        texts.append(text)
        pending = []
    return texts
