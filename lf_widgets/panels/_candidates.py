"""Suggested revisions in a panel: what a sample's open candidate list holds, and its widgets.

Shared by the rating panel's cards and the critique queue. The candidates come from the session
(``session.suggest_revisions``: ``"revision"`` events, one per candidate as the refiner finishes
it, then ``"revisions_done"``; or ``session.propagate_edit``: suggestions repeating a person's
pattern edit); this module only keeps what has arrived per sample and draws it. Every text a
refiner, a critique or an error wrote is untrusted and goes through
:func:`~lf_widgets.panels._text.escaped_html`; button labels are fixed ("Use 2").
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ipywidgets as widgets

from ._text import escaped_html

__all__ = ["DIGIT_KEYS", "RevisionState", "CandidateList", "revision_parts", "done_parts",
           "finished", "listen", "call_verb", "describe_correction", "candidate_keys",
           "candidate_hint"]

_TEXT = "white-space:pre-wrap;border-left:3px solid #8e24aa;padding-left:8px"
#: The keys that pick a candidate (so k is at most 9 where keys pick them).
DIGIT_KEYS = tuple(str(d) for d in range(1, 10))
_NOTE = "color:#555;font-size:0.9em"


@dataclass
class RevisionState:
    """The candidate list of one sample, as the panel shows it.

    ``kind`` is ``"revision"`` (a refiner's candidates for a critique) or ``"propagated"`` (the
    same pattern edit as a correction elsewhere: suggestions from ``propagate_edit``).
    """

    sample_id: int
    kind: str = "revision"
    k: int = 0  # candidates asked for (shown as "2 of 3 written")
    candidates: dict[int, Any] = field(default_factory=dict)  # index -> Candidate / Suggestion
    request: Any = None  # the RevisionRequest, once suggest_revisions returned it
    done: bool = False  # the refiner has finished (or failed)
    error: str | None = None  # why it failed, shown to the person
    open: bool = True  # shown with its keys; closed after accept / reject / Esc
    critique: str | None = None  # the critique the candidates follow
    edit: str | None = None  # a propagated edit's description ("add 'Ahoy! ' at the start")
    source: str | None = None  # where a propagated suggestion came from ("sample 1")

    def ordered(self) -> list:
        """The candidates that have arrived, in index order."""
        return [self.candidates[i] for i in sorted(self.candidates)]

    def get(self, j: int):
        """Candidate ``j`` (1-based, as shown), or a ValueError saying why there is none."""
        shown = self.ordered()
        if not isinstance(j, int) or isinstance(j, bool) or j < 1:
            raise ValueError(f"candidate must be a number from 1, got {j!r}")
        if j > len(shown):
            more = "" if self.done else f" (still writing: {len(shown)} of {self.k} so far)"
            raise ValueError(f"there is no candidate {j}: {len(shown)} shown{more}")
        return shown[j - 1]

    def attach(self, request) -> None:
        """Take the RevisionRequest that ``suggest_revisions`` returned, with whatever it wrote
        before the panel held it (its events may have come first)."""
        self.request = request
        self.k = int(getattr(request, "k", self.k) or self.k)
        for index, candidate in enumerate(list(getattr(request, "candidates", None) or [])):
            self.candidates.setdefault(index, candidate)
        if getattr(request, "done", False):
            self.finish([], request)

    def finish(self, candidates, request) -> None:
        """The refiner stopped (``"revisions_done"``): done, or failed (``request.error``)."""
        for index, candidate in enumerate(candidates):
            self.candidates.setdefault(index, candidate)
        self.done = True
        error = getattr(request, "error", None)
        self.error = None if error is None else str(error)

    def mine(self, request) -> bool:
        """Whether an event of ``request`` belongs to this list (not to an older request)."""
        return request is None or self.request is None or request is self.request


def revision_parts(payload) -> tuple[int, int, Any, Any]:
    """(sample_id, index, candidate, request) of a ``"revision"`` event, whichever shape the
    session sends (a named record with these attributes, or a plain tuple)."""
    if hasattr(payload, "candidate"):
        return (int(payload.sample_id), int(payload.index), payload.candidate,
                getattr(payload, "request", None))
    sample_id, index, candidate = tuple(payload)[:3]
    rest = tuple(payload)[3:]
    return int(sample_id), int(index), candidate, rest[0] if rest else None


def done_parts(payload) -> tuple[int, list, Any]:
    """(sample_id, candidates, request) of a ``"revisions_done"`` event."""
    if hasattr(payload, "sample_id") and hasattr(payload, "candidates"):
        request = getattr(payload, "request", None)
        if request is None and hasattr(payload, "done"):  # the RevisionRequest itself
            request = payload
        return int(payload.sample_id), list(payload.candidates or []), request
    sample_id, candidates = tuple(payload)[:2]
    rest = tuple(payload)[2:]
    return int(sample_id), list(candidates or []), rest[0] if rest else None


def finished(states: dict, payload) -> RevisionState | None:
    """The list in ``states`` (sample id -> RevisionState) that a ``"revisions_done"`` event
    finishes, marked done (or failed); None when the event is another request's."""
    sample_id, candidates, request = done_parts(payload)
    state = states.get(sample_id)
    if state is None or state.kind != "revision" or not state.mine(request):
        return None
    state.finish(candidates, request)
    return state


def listen(session, on_revision: Callable, on_done: Callable) -> list[Callable]:
    """Subscribe to the session's ``"revision"`` and ``"revisions_done"`` events; the
    unsubscribe functions (none for a session without suggested revisions: the panel's other
    parts still work)."""
    out = []
    for name, listener in (("revision", on_revision), ("revisions_done", on_done)):
        try:
            out.append(session.on(name, listener))
        except ValueError:  # no such event
            pass
    return out


def call_verb(fn: Callable, *args, annotator: str | None = None, **kwargs):
    """Call a session verb, passing ``annotator`` only when the verb takes it (the panel's
    annotator may differ from the session's)."""
    if annotator is not None:
        try:
            params = inspect.signature(fn).parameters
        except (TypeError, ValueError):
            params = {}
        if "annotator" in params or any(p.kind is p.VAR_KEYWORD for p in params.values()):
            kwargs["annotator"] = annotator
    return fn(*args, **kwargs)


def refiner_name(candidate) -> str:
    """Who wrote a candidate, as a person reads it."""
    name = getattr(candidate, "refiner", None)
    return str(name) if name else "propagated edit"


def describe_correction(meta: dict | None) -> str:
    """What a correction in force is, from its provenance: "correction (accepted revision 2
    from own:SmolLM2-135M-Instruct)"; a typed one is just "correction"."""
    meta = meta if isinstance(meta, dict) else {}
    via = meta.get("via")
    number = meta.get("candidate")
    nth = "" if number is None else f" {int(number) + 1}"
    source = f" from {meta['refiner']}" if meta.get("refiner") else ""
    if via == "revision":
        return f"correction (accepted revision{nth}{source})"
    if via == "edited_revision":
        return f"correction (edited revision{nth}{source})"
    if via == "propagated":
        origin = meta.get("propagated_from")
        return "correction (propagated" + (f" from correction {origin})" if origin else ")")
    return "correction"


def candidate_keys(state: RevisionState | None, esc: str | None = "back to rating"
                   ) -> dict[str, str] | None:
    """The keys while ``state``'s list is open, key -> what it does (``{"1–3": "pick a
    revision", "e": "edit", "x": "reject all", "Esc": "back to rating"}``; no Esc entry when
    ``esc`` is None); None when closed."""
    if state is None or not state.open:
        return None
    n = max(len(state.candidates), 1)
    digits = "1" if n == 1 else f"1–{n}"
    propagated = state.kind == "propagated"
    keys = {digits: "use the suggestion" if propagated else "pick a revision", "e": "edit",
            "x": "reject" if propagated else "reject all"}
    if esc:
        keys["Esc"] = esc
    return keys


def candidate_hint(state: RevisionState | None, esc: str | None = "back to rating"
                   ) -> str | None:
    """:func:`candidate_keys` as a person reads it: "1–3 pick a revision · e edit · x reject
    all · Esc back to rating"; None when no list is open."""
    keys = candidate_keys(state, esc)
    return None if keys is None else " · ".join(f"{k} {what}" for k, what in keys.items())


class CandidateList(widgets.VBox):
    """The candidate rows of one sample: each with "Use j" and "Edit"; "Reject all", "Close".

    Rows are kept and updated in place as candidates stream in (a button that has the keyboard
    focus is never replaced under the person's finger); the list is hidden, not removed, when it
    closes. The callbacks get the 1-based candidate number.
    """

    def __init__(self, on_use: Callable[[int], Any], on_edit: Callable[[int], Any],
                 on_reject: Callable[[], Any], on_close: Callable[[], Any], *,
                 esc: str | None = "back to rating", more_keys: str = ""):
        self._on_use, self._on_edit = on_use, on_edit
        self.esc = esc  # what Esc does, in the keys line (None: Esc is not a key here)
        self.more_keys = more_keys  # other keys to name in the keys line ("n next")
        self.header = widgets.HTML()
        self.rows_box = widgets.VBox()
        # (text, "Use j", "Edit", the row's box) per candidate row made so far
        self.rows: list[tuple[widgets.HTML, widgets.Button, widgets.Button, widgets.HBox]] = []
        self.reject_button = widgets.Button(description="Reject all", icon="times",
                                            tooltip="none of them (key x)")
        self.close_button = widgets.Button(description="Close", tooltip="back to rating (Esc)")
        self.reject_button.on_click(lambda _: on_reject())
        self.close_button.on_click(lambda _: on_close())
        self.footer = widgets.HTML()
        super().__init__([self.header, self.rows_box,
                          widgets.HBox([self.reject_button, self.close_button, self.footer])],
                         layout=widgets.Layout(display="none", border="1px dashed #8e24aa",
                                               padding="4px", margin="4px 0"))
        self.add_class("lfw-candidates")

    @property
    def shown(self) -> int:
        """Candidate rows visible now."""
        if self.layout.display == "none":
            return 0
        return sum(1 for row in self.rows if row[3].layout.display != "none")

    def _row(self, j: int):
        while len(self.rows) < j:
            n = len(self.rows) + 1
            use = widgets.Button(description=f"Use {n}", button_style="info",
                                 tooltip=f"make candidate {n} the correction (key {n})",
                                 layout=widgets.Layout(width="auto"))
            edit = widgets.Button(description="Edit", tooltip="put it in the correction box "
                                  "to edit, then Save correction (key e: the first)",
                                  layout=widgets.Layout(width="auto"))
            use.on_click(lambda _, n=n: self._on_use(n))
            edit.on_click(lambda _, n=n: self._on_edit(n))
            text = widgets.HTML(layout=widgets.Layout(width="70%"))
            text.add_class("lfw-candidate")
            box = widgets.HBox([text, use, edit])
            self.rows.append((text, use, edit, box))
            # appended, the earlier rows' views stay (and a focused button keeps the focus)
            self.rows_box.children = (*self.rows_box.children, box)
        return self.rows[j - 1]

    def show(self, state: RevisionState | None, *, focused: bool = True) -> None:
        """Draw ``state`` (None or closed: hidden)."""
        if state is None or not state.open:
            self.layout.display = "none"
            return
        candidates = state.ordered()
        for j, candidate in enumerate(candidates, 1):
            text, _, _, box = self._row(j)
            note = f"{j}. by {refiner_name(candidate)}"
            strategy = getattr(candidate, "strategy", None)
            if strategy:
                note += f" · {strategy}"
            value = escaped_html(note, style=_NOTE) + escaped_html(candidate.text, style=_TEXT)
            if text.value != value:  # unchanged rows send nothing to the page
                text.value = value
            box.layout.display = None
        for text, _, _, box in self.rows[len(candidates):]:  # rows of an earlier, longer list
            text.value, box.layout.display = "", "none"
        self.header.value = escaped_html(self._title(state, focused, self.esc, self.more_keys),
                                         style="font-weight:bold;white-space:pre-wrap")
        self.reject_button.description = "Reject" if state.kind == "propagated" else "Reject all"
        if state.error:
            self.footer.value = escaped_html(f"✗ the refiner failed: {state.error}",
                                             tag="span", style="color:#b00020")
        elif not state.done:
            self.footer.value = escaped_html(
                f"writing… {len(candidates)} of {state.k or '?'} candidates so far", tag="span",
                style=_NOTE)
        elif state.kind == "propagated":
            self.footer.value = ""
        else:
            n = len(candidates)
            self.footer.value = escaped_html(f"{n} candidate" + ("s" if n != 1 else ""),
                                             tag="span", style=_NOTE)
        self.layout.display = None

    @staticmethod
    def _title(state: RevisionState, focused: bool, esc: str | None, more: str) -> str:
        if state.kind == "propagated":
            title = "Suggested: the same edit"
            if state.edit:
                title += f" ({state.edit})"
            if state.source:
                title += f" as on {state.source}"
        else:
            title = "Suggested revisions"
            if state.critique:
                title += f" following the critique “{state.critique}”"
        hint = candidate_hint(state, esc) + (f" · {more}" if more else "")
        keys = f"keys {hint}" if focused else f"keys (once this sample is focused): {hint}"
        return f"{title}\n{keys}"
