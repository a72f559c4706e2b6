"""Step by step on the tiny model: one SFT / DPO step on one sample, the KTO view, the panel.

Each test builds its own tiny model (``tiny_model(seed=0)``): a step changes the weights.
"""

import math
from html.parser import HTMLParser

import ipywidgets as widgets
import pytest
import torch

from lf_widgets import Session
from lf_widgets import stepper as st
from lf_widgets.models import tiny_model
from lf_widgets.panels.stepper import StepperPanel
from lf_widgets.store import SampleRecord

PROMPT = "What is the capital of France?"
GOOD = "The capital of France is Paris."
BAD = "Please write a short poem about the sea."
XSS = '<img src=x onerror="document.title=\'pwned\'"> and <b>bold</b>'


@pytest.fixture
def session(tmp_path):
    s = Session(model=tiny_model(seed=0), store=tmp_path / "feedback.sqlite", annotator="ann")
    yield s
    s.close()


def add(session, text, prompt=PROMPT):
    """Store a sample (no token ids: tokenized as an import is) and return its id."""
    (sample_id,) = session.store.add_samples([SampleRecord(text=text, prompt=prompt)])
    return sample_id


def all_widgets(widget):
    yield widget
    for child in getattr(widget, "children", ()):
        yield from all_widgets(child)


def button(panel, description):
    (found,) = [w for w in all_widgets(panel)
                if isinstance(w, widgets.Button) and w.description == description]
    return found


def test_sft_step_lowers_the_loss_of_the_chosen_sample(session):
    good = add(session, GOOD)
    session.record_rating(good, 5)
    prompt, ids = st.sample_tokens(session, good)
    report = st.sft_step_on(session, prompt, ids)
    assert not report.skipped and math.isfinite(report.grad_norm)
    assert report.loss_after < report.loss_before
    assert report.loss_after == pytest.approx(st.loss_of(st.token_probabilities(session, prompt, ids)))
    assert sum(d > 0 for d in report.delta_logp) > len(ids) / 2  # most tokens became likelier
    assert session.adapter_step == 1  # a real step: later samples know they come from it


def test_token_probabilities_match_a_direct_computation(session):
    prompt, ids = st.sample_tokens(session, add(session, GOOD))
    tokens = st.token_probabilities(session, prompt, ids)
    assert [t.token_id for t in tokens] == ids
    assert all(0 < t.prob <= 1 and t.logp == pytest.approx(math.log(t.prob)) for t in tokens)
    prompt_ids = session.tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True)
    prompt_ids = prompt_ids["input_ids"] if hasattr(prompt_ids, "keys") else prompt_ids
    full = torch.tensor([list(prompt_ids) + ids])
    with torch.no_grad():
        logp = torch.log_softmax(session.model.call(
            lambda: session.model.model(input_ids=full).logits)[0].double(), -1)  # (T, V)
    n = len(prompt_ids)
    direct = [logp[n - 1 + i, t].item() for i, t in enumerate(ids)]
    assert [t.logp for t in tokens] == pytest.approx(direct, abs=1e-4)


def test_token_texts_put_split_characters_back_together(session):
    prompt, ids = st.sample_tokens(session, add(session, "你好! 谢谢 <b>"))
    texts = [t.token_text for t in st.token_probabilities(session, prompt, ids)]
    assert "".join(texts) == session.tokenizer.decode(ids, skip_special_tokens=False)
    assert "\ufffd" not in "".join(texts)


class _Markup(HTMLParser):
    """The tags and the text of an HTML value, as a browser would parse them."""

    def __init__(self, value):
        super().__init__(convert_charrefs=True)
        self.tags, self.text = set(), []
        self.feed(value)

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)

    def handle_data(self, data):
        self.text.append(data)


def test_panel_shows_untrusted_text_as_text(session):
    sample_id = add(session, XSS, prompt="<i>" + XSS)
    panel = StepperPanel(session, sample_id)
    button(panel, "Take one step").click()
    values = [w.value for w in all_widgets(panel) if isinstance(w, (widgets.HTML, widgets.HTMLMath))]
    assert values and panel.steps_taken == 1
    for value in values:  # only the panel's own markup is markup; the sample's tags are text
        assert _Markup(value).tags <= {"div", "span"}
        assert "<img" not in value and "<b>" not in value
    shown = "".join(_Markup(panel._tokens.value).text)
    assert XSS in shown and "<i>" + XSS in "".join(_Markup(panel._prompt.value).text)
    for label in panel.figure.layout.xaxis.ticktext:  # plotly renders a few tags too: escaped
        assert "<" not in label and ">" not in label


def test_clicking_take_one_step_updates_loss_steps_and_figure(session):
    good = add(session, GOOD)
    session.record_rating(good, 5)
    panel = session.step_by_step(good, display=False) if hasattr(session, "step_by_step") \
        else StepperPanel(session, good)
    seen = []
    panel.observe(lambda ch: seen.append(ch["name"]), ["loss", "steps_taken"])
    before = panel.loss
    assert panel.figure.data[0].y in (None, ())  # nothing to show before a step
    button(panel, "Take one step").click()
    assert panel.loss < before and panel.steps_taken == 1 and set(seen) == {"loss", "steps_taken"}
    assert len(panel.figure.data[0].y) == len(panel.tokens)
    assert panel.figure.data[0].y == pytest.approx(panel.report.delta_logp)
    assert "step 1" in panel._status.value
    report = panel.take_step()  # the method twin: same path
    assert panel.steps_taken == 2 and panel.loss == pytest.approx(report.loss_after)


def test_dpo_step_raises_the_reward_margin(session):
    prompt, good = st.sample_tokens(session, add(session, GOOD))
    _, bad = st.sample_tokens(session, add(session, BAD))
    report = st.dpo_step_on(session, prompt, good, bad)
    assert report.margin_before == pytest.approx(0.0, abs=1e-5)  # a fresh adapter is the base model
    assert report.margin_after > report.margin_before
    assert report.loss_after < report.loss_before
    assert report.loss_before == pytest.approx(math.log(2), abs=1e-4)  # −log σ(0)


def test_kto_view_of_a_thumbs_down(session):
    prompt, good = st.sample_tokens(session, add(session, GOOD))
    _, bad = st.sample_tokens(session, add(session, BAD))
    st.sft_step_on(session, prompt, good)  # move the adapter, so the rewards are not all zero
    view = st.kto_view(session, prompt, bad)
    numbers = [view.policy_logp, view.reference_logp, view.reward, view.kl, view.loss, view.dloss_dlogp]
    assert all(math.isfinite(x) for x in numbers)
    assert view.reward == pytest.approx(view.beta * (view.policy_logp - view.reference_logp), abs=1e-5)
    assert view.dloss_dlogp > 0  # a step would make the bad answer less likely
    fixed = st.kto_view(session, prompt, bad, kl=0.0)
    assert fixed.loss == pytest.approx(1 - 1 / (1 + math.exp(fixed.reward)), abs=1e-5)  # 1 − σ(−r·β)
    assert "lowers" in view.sentence()


def test_one_step_on_a_critique_conditioned_example(session):
    """feedback=True: the step is on the hindsight example (prompt + the critique it got ->
    the answer), what train(hindsight=True) trains on; the panel shows that user turn."""
    from lf_widgets.critique_data import hindsight_prompt

    sample_id = add(session, BAD)
    with pytest.raises(ValueError, match=f"sample {sample_id} has no critique"):
        session.step_by_step(sample_id, display=False, feedback=True)
    with pytest.raises(ValueError, match="feedback must be"):
        session.step_by_step(sample_id, display=False, feedback="  ")
    session.record_critique(sample_id, "Off topic: a poem, not the capital. <b>x</b>")
    panel = session.step_by_step(sample_id, display=False, feedback=True)
    conditioned = hindsight_prompt(PROMPT, "Off topic: a poem, not the capital. <b>x</b>")
    assert panel._stepper.prompt == conditioned
    _, ids = st.sample_tokens(session, sample_id)
    plain = st.loss_of(st.token_probabilities(session, PROMPT, ids))
    assert panel.loss == pytest.approx(st.loss_of(st.token_probabilities(session, conditioned, ids)))
    assert panel.loss != pytest.approx(plain)  # the feedback is in the context the model sees
    shown = "".join(_Markup(panel._prompt.value).text)
    assert shown.startswith("Prompt with the feedback (a hindsight example): ")
    assert conditioned in shown and "<b>" not in panel._prompt.value  # escaped
    report = panel.take_step()
    assert report.loss_after < report.loss_before
