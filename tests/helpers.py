"""Test helpers shared by several test files."""

from lf_widgets.session import Sample
from lf_widgets.store import SampleRecord


def finished_samples(session, prompts, n=2, *, seed=0, max_new_tokens=8):
    """Samples that ended with an end-of-turn token, like a real model's answers.

    The tiny random model almost never emits its end-of-turn token, so its samples are cut off
    at ``max_new_tokens`` — and a cut-off sample is no SFT target (``samples.truncated``). For
    tests of training this stores the generated tokens plus the end-of-turn token.
    """
    out = session.generate(list(prompts), n=n, max_new_tokens=max_new_tokens, seed=seed,
                           progress=False)
    eos = session.tokenizer.eos_token_id
    records = [SampleRecord(text=s.text, prompt=s.prompt, model=s.model,
                            token_ids=list(row.token_ids[:max_new_tokens - 1]) + [eos])
               for s, row in zip(out, session.store.samples().set_index("sample_id")
                                 .loc[[s.sample_id for s in out]].itertuples())]
    ids = session.store.add_samples(records)
    return [Sample(i, r.prompt, r.text, r.model) for i, r in zip(ids, records)]
