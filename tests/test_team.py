"""Teams: work plans with overlap, each annotator's queue, agreement against published
references, review and adjudication down to the training data, a Session on PostgreSQL."""

from collections import Counter

import numpy as np
import pytest

from lf_widgets.store import SampleRecord
from lf_widgets.team import item_key

XSS = '<img src=x onerror="document.title=\'pwned\'">'

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", the example the
# krippendorff package's tests use: 4 coders, 12 units, values 1-5, NaN = not coded.
KRIPPENDORFF_2011 = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, np.nan, np.nan, np.nan],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, np.nan, 3],
    [np.nan, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, np.nan],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, np.nan],
]


def add_samples(store, n, prompts=5):
    return store.add_samples([SampleRecord(f"answer {i}", prompt=f"question {i % prompts}")
                              for i in range(n)])


def figure(table, kind, metric, who="overall"):
    row = table[(table.kind == kind) & (table.metric == metric) & (table.annotators == who)]
    assert len(row) == 1, (kind, metric, who)
    return row.iloc[0]


# -- assignment ----------------------------------------------------------------------------------
@pytest.mark.parametrize("n_items", [12, 13, 29])
def test_every_item_goes_to_exactly_overlap_annotators_balanced_within_one(session, n_items):
    ids = add_samples(session.store, n_items)
    plan = session.assign(ids, ["ann", "bob", "cy"], overlap=2, seed=3)
    per_item = plan.groupby("item")["annotator"].agg(list)
    assert len(per_item) == n_items
    assert all(len(who) == 2 and len(set(who)) == 2 for who in per_item)
    loads = plan["annotator"].value_counts()
    assert set(loads.index) == {"ann", "bob", "cy"} and loads.max() - loads.min() <= 1
    again = session.assign(ids, ["ann", "bob", "cy"], overlap=2, seed=3)
    assert again[["item", "annotator"]].values.tolist() == plan[["item", "annotator"]].values.tolist()


def test_items_may_be_samples_pairs_prompts_and_bad_plans_are_refused(session):
    a, b = add_samples(session.store, 2)
    store = session.store
    assert item_key(store, a) == f"s:{a}" and item_key(store, (b, a)) == f"p:{a}:{b}"
    assert item_key(store, "question 0") == f"q:{store.add_prompt('question 0')}"
    with pytest.raises(ValueError, match="overlap"):
        session.assign([a, b], ["ann", "bob"], overlap=3)
    with pytest.raises(ValueError, match="two different"):
        session.assign([(a, a)], ["ann"], overlap=1)


def test_each_queue_shows_only_its_annotators_pending_items_first(session):
    ids = add_samples(session.store, 12)
    plan = session.assign(ids, ["ann", "bob", "cy"], overlap=2, seed=0)
    mine = [int(k[2:]) for k in plan.loc[plan.annotator == "ann", "item"]]
    queue = session.queue(display=False)
    assert queue.rating.sample_ids() == mine  # nothing of bob's or cy's, plan order
    assert (queue.done, queue.assigned) == (0, 8)
    queue.rating.rate(0, 4)  # the panel's method twin: ann rates her first item
    assert (queue.done, queue.assigned) == (1, 8)
    assert "ann: 1 of 8 done · team: 0 of 12 items done" in queue.header.value
    session.record_rating(mine[1], 2, annotator="bob")  # bob's judgement is not ann's work
    later = session.queue(display=False)
    assert later.rating.sample_ids() == mine[1:]
    queue.close()
    later.close()


def test_a_queue_of_pairs_and_rechecks_later(session):
    a, b, c, d = add_samples(session.store, 4, prompts=1)
    session.assign([(a, b), (c, d)], ["ann"], overlap=1, seed=0, recheck=0.5)
    queue = session.queue(display=False, seed=0)
    assert queue.rating is None and len(queue.preference.items) == 2
    recheck = session.store.assignments().query("recheck").item.iloc[0]
    first, second = (int(x) for x in recheck.split(":")[1:])
    session.record_preference(first, second, "a")
    assert session.progress().pending["ann"] == [k for k in ("p:%d:%d" % (a, b),
                                                               "p:%d:%d" % (c, d))
                                                 if k != recheck] + [recheck]
    session.record_preference(second, first, "b")  # the recheck, later: the same choice
    table = session.agreement(n_boot=20)
    assert figure(table, "preference", "percent_agreement", "ann (recheck)").value == 1.0
    queue.close()


# -- agreement -----------------------------------------------------------------------------------
def test_alpha_equals_the_krippendorff_package_on_krippendorffs_example(session):
    import krippendorff

    ids = add_samples(session.store, 12)
    for coder, row in zip(["c1", "c2", "c3", "c4"], KRIPPENDORFF_2011):
        for sid, value in zip(ids, row):
            if not np.isnan(value):
                session.record_rating(sid, int(value), annotator=coder)
    table = session.agreement(n_boot=200, seed=1)
    alpha = figure(table, "rating", "krippendorff_alpha")
    expected = krippendorff.alpha(KRIPPENDORFF_2011, level_of_measurement="ordinal")
    assert alpha.value == pytest.approx(expected, abs=1e-12) and round(alpha.value, 3) == 0.815
    assert alpha["items"] == 11 and alpha.ci_low <= alpha.value <= alpha.ci_high
    pair = figure(table, "rating", "percent_agreement", "c1, c2")
    assert pair["items"] == 9 and pair.value == pytest.approx(8 / 9)  # unit 6: 1 vs 2


def test_kappa_on_a_hand_built_case(session):
    # Cohen's (1960) worked example, as on Wikipedia: of 50 items both judges say "a" for 20
    # and "b" for 15, 5 are a/b and 10 b/a: p_o = 0.7, p_e = 0.5, κ = 0.4.
    ids = add_samples(session.store, 100, prompts=50)
    pairs = list(zip(ids[0::2], ids[1::2]))
    votes = [("a", "a")] * 20 + [("a", "b")] * 5 + [("b", "a")] * 10 + [("b", "b")] * 15
    for (x, y), (first, second) in zip(pairs, votes):
        session.record_preference(x, y, first, annotator="ann")
        session.record_preference(y, x, {"a": "b", "b": "a"}[second], annotator="bob")  # flipped
    table = session.agreement(n_boot=100)
    assert figure(table, "preference", "cohen_kappa", "ann, bob").value == pytest.approx(0.4)
    assert figure(table, "preference", "percent_agreement").value == pytest.approx(0.7)
    # Fleiss pools both judges' shares: p_e = 0.55² + 0.45², κ = (0.7 - 0.505) / 0.495
    assert figure(table, "preference", "fleiss_kappa").value == pytest.approx(0.195 / 0.495)


def test_team_panel_draws_a_heatmap_of_pairwise_agreement(session):
    from lf_widgets.panels._chart import MIME

    ids = add_samples(session.store, 6)
    for who, shift in (("ann", 0), ("bob", 0), (XSS, 1)):
        for i, sid in enumerate(ids):
            session.record_rating(sid, 1 + (i + shift * (i % 2)) % 5, annotator=who)
    panel = session.team(display=False, n_boot=10)
    [bundle] = panel.figures.outputs
    trace = bundle["data"][MIME]["data"][0]
    assert trace["type"] == "heatmap" and np.shape(trace["z"]) == (3, 3)
    assert "<img" not in str(trace["x"]) and "&lt;img" in str(trace["x"])
    panel.close()


# -- review and adjudication ---------------------------------------------------------------------
def test_review_shows_every_judgement_escaped_and_records_the_adjudication(session):
    a, b = add_samples(session.store, 2)
    session.record_rating(a, 5, annotator="ann")
    session.record_rating(a, 1, annotator=XSS)
    session.record_critique(a, XSS, annotator=XSS)
    session.record_rating(b, 3, annotator="ann")
    session.record_rating(b, 4, annotator="bob")  # spread 1: no disagreement
    panel = session.review(display=False)
    assert (panel.total, panel.settled) == (1, 0)
    shown = panel.body.children[0].value
    assert "<img" not in shown and shown.count("&lt;img") == 2  # the name and the critique
    assert "ann: rated 5" in shown and "answer 0" in shown
    assert panel.settle(4)
    assert (panel.total, panel.settled) == (1, 1) and "rating 4" in panel.body.children[0].value
    [row] = session.store.adjudications().itertuples()
    assert (row.subject, row.value, row.reviewer) == (f"s:{a}", 4, "ann")


def test_an_adjudication_changes_the_training_example(fresh):
    from lf_widgets.trainer import TrainConfig, training_data

    s = fresh
    a, b, c = add_samples(s.store, 3, prompts=1)
    s.record_rating(a, 5, annotator="ann")
    s.record_rating(a, 1, annotator="bob")  # mean 3: neither good nor bad
    s.record_preference(b, c, "a", annotator="ann")
    s.record_preference(b, c, "b", annotator="bob")  # no majority: no pair
    before = training_data(s.store, s.tokenizer, TrainConfig()).summary()
    assert before.loc["sft", "examples"] == 0 and before.loc["dpo", "dropped: no majority"] == 1
    s.adjudicate(a, 5)
    s.adjudicate((b, c), c)
    after = training_data(s.store, s.tokenizer, TrainConfig()).summary()
    assert after.loc["sft", "examples"] == 1 and after.loc["sft", "sources"] == "adjudicated 1"
    assert "adjudicated 1" in after.loc["dpo", "sources"]
    run = s.train("sft", steps=1)
    run.wait(timeout=300)
    assert run.reason.startswith("SFT was requested; 1 examples") and run.state == "done"


# -- on PostgreSQL -------------------------------------------------------------------------------
def test_a_session_on_postgresql_records_as_its_role(tiny):
    from lf_widgets import Session
    from lf_widgets.store_pg import init_team
    from tests.postgres import Cluster

    cluster = Cluster()
    try:
        db = cluster.new_database()
        init_team(cluster.url(db), ["alice", "bob"])
        cluster.sql("ALTER ROLE alice PASSWORD 'pw-a'", "ALTER ROLE bob PASSWORD 'pw-b'")
        lead = Session(tiny, store=cluster.url(db), annotator="lead", resume=False)
        ids = add_samples(lead.store, 6)
        lead.assign(ids, ["alice", "bob"], overlap=1, seed=0)
        alice = Session(tiny, store=cluster.url(db, "alice", "pw-a"), resume=False)
        assert alice.annotator == "alice" and "pw-a" not in repr(alice)
        queue = alice.queue(display=False)
        assert len(queue.rating.sample_ids()) == 3
        queue.rating.rate(0, 5)
        assert lead.progress().table.loc["alice", "done"] == 1
        with pytest.raises(PermissionError):
            alice.record_rating(ids[0], 1, annotator="bob")
        assert Counter(lead.feedback.annotator.dropna()) == Counter({"alice": 1})
        queue.close()
        for s in (alice, lead):
            s.store.close()
    finally:
        cluster.stop()


def test_ab_votes_get_kappa_and_a_pair_is_settled_in_the_review(session):
    a, b, c, d = add_samples(session.store, 4, prompts=1)
    store = session.store
    for item, (x, y) in enumerate([("a", "a"), ("b", "b"), ("a", "tie"), ("b", "b")]):
        for who, choice in (("ann", x), ("bob", y)):
            store.record(a, "ab_vote", {"test": "t1", "item": item, "other": b,
                                        "choice": choice}, who)
    table = session.agreement(n_boot=50)
    assert figure(table, "ab_vote", "percent_agreement", "ann, bob").value == 0.75
    assert figure(table, "ab_vote", "cohen_kappa", "ann, bob").value == pytest.approx(
        (0.75 - 0.5 * 0.25 - 0.5 * 0.5) / (1 - 0.5 * 0.25 - 0.5 * 0.5))
    session.record_preference(c, d, "a", annotator="ann")
    session.record_preference(d, c, "a", annotator="bob")  # the other way
    panel = session.review(display=False)
    assert panel.total == 1 and [b.description for b in panel.controls.children] == [
        "A", "B", "tie"]
    panel.choices["b"].click()  # B is the higher sample id: d
    assert session.store.adjudications().value.tolist() == [{"winner": d}]
    assert "adjudicated: B" in panel.body.children[0].value
