"""Keyboard shortcuts for a panel: a tiny anywidget that forwards the keys a panel declares.

The component finds its panel's root element (the closest ``.lfw-panel``) and makes it
focusable. It **takes the focus when the panel appears** (unless the person is typing in an
editor or a text field at that moment: their keystrokes must not turn into ratings), and a click
anywhere in the cell's output gives it back. It shows whether keys are active: "keys active",
"typing: keys go to the text (Esc: back to keys)" or "click the panel to use keys".

Keys pressed while the focus is in the panel never reach JupyterLab's command shortcuts: the
root carries ``data-lm-suppress-shortcuts``, and Lumino, which resolves a key by walking up from
the focused element, stops at that attribute; so ``4`` rates instead of turning the next cell
into a heading, and ``a`` votes "A" instead of inserting a cell. Keys typed into text fields
(critique, correction) are left to the field. A panel may change its keys and hint while it is
shown (:meth:`KeyListener.set_keys`: the rating card's candidate list makes the digits pick a
revision), and when the kernel hides or replaces the button that had the focus, the focus goes
back to the panel rather than to the page (where the next key would reach JupyterLab). Where custom widgets cannot run, the panels still
work by mouse: every key has a button.
"""

from __future__ import annotations

from collections.abc import Callable

import anywidget
import traitlets

__all__ = ["KeyListener", "PANEL_CLASS", "ACTIVE", "INACTIVE", "TYPING", "hint_text"]

PANEL_CLASS = "lfw-panel"  # panels add this CSS class so the listener can find its root
# What the person reads next to the key list (and ``data-keys`` on the hint: active/inactive/typing).
ACTIVE = "⌨ keys active"
INACTIVE = "⌨ click the panel to use keys"
TYPING = "⌨ typing: keys go to the text (Esc: back to keys)"

_ESM = """
const EDITABLE = 'textarea, input, select, [contenteditable="true"], [contenteditable=""]';
const editing = (node) => !!(node && node.closest && node.closest(EDITABLE));
const focus = (root) => root.focus({ preventScroll: true });  // never scroll the notebook away

function attach(el, model, state, tries) {
  const root = el.closest('.%(panel)s');
  if (!root) {  // the view may not be in the page yet
    if (tries < 200) state.timer = setTimeout(() => attach(el, model, state, tries + 1), 50);
    return;
  }
  root.setAttribute('data-lm-suppress-shortcuts', 'true');
  if (!root.hasAttribute('tabindex')) root.setAttribute('tabindex', '0');
  const onKey = (event) => {
    if (editing(event.target)) {
      if (event.key === 'Escape') { event.stopPropagation(); focus(root); }
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (!model.get('bound_keys').includes(event.key)) return;
    event.preventDefault();
    event.stopPropagation();
    model.send({ key: event.key });
  };
  // focusout fires before the next element has the focus: look once it has settled.
  const onFocus = () => setTimeout(() => state.show(root), 0);
  // A click in the cell's output but outside the panel (its prompt, a margin) focuses the cell;
  // the person meant the panel. Clicks inside reach the root by themselves (tabindex).
  const area = root.closest('.jp-OutputArea') || root;
  const onClick = (event) => {
    if (!root.contains(event.target) && !editing(event.target)) setTimeout(() => focus(root), 0);
  };
  // The kernel hides, disables or replaces widgets under the person's finger (a candidate list
  // closes after "Use 2" or the key 2): the focused button goes, the focus falls to the page's
  // body, and the next key would reach JupyterLab instead. Whenever the focus was in the panel
  // and nothing else took it, give it back to the panel.
  let inside = root.contains(document.activeElement);
  const lost = () => !document.activeElement || document.activeElement === document.body;
  const onIn = () => { inside = true; };
  const onOut = (event) => {
    const left = event.target;
    inside = !!(event.relatedTarget && root.contains(event.relatedTarget));
    if (!event.relatedTarget) setTimeout(() => {
      if (root.isConnected && lost() && (!left.isConnected || left.offsetParent === null))
        focus(root);
    }, 0);
  };
  const observer = new MutationObserver(() => { if (inside && lost()) focus(root); });
  observer.observe(root, { childList: true, subtree: true, attributes: true,
                           attributeFilter: ['style', 'disabled', 'class'] });
  // Capture phase: ipywidgets' text fields stop every keydown from bubbling (Esc included).
  root.addEventListener('keydown', onKey, true);
  root.addEventListener('focusin', onFocus);
  root.addEventListener('focusout', onFocus);
  root.addEventListener('focusin', onIn);
  root.addEventListener('focusout', onOut);
  area.addEventListener('click', onClick);
  state.cleanup.push(() => {
    observer.disconnect();
    root.removeEventListener('focusin', onIn);
    root.removeEventListener('focusout', onOut);
    root.removeEventListener('keydown', onKey, true);
    root.removeEventListener('focusin', onFocus);
    root.removeEventListener('focusout', onFocus);
    area.removeEventListener('click', onClick);
  });
  if (!editing(document.activeElement)) focus(root);  // the panel appears: keys go to it
  state.show(root);
}

function render({ model, el }) {
  el.classList.add('lfw-keys');
  const status = document.createElement('span');
  const hint = document.createElement('span');
  status.style.cssText = 'font-size: 0.85em; font-weight: bold; margin-right: 0.6em;';
  hint.style.cssText = 'font-size: 0.85em; color: #666;';
  hint.textContent = model.get('hint');  // textContent: never parsed as HTML
  el.append(status, hint);
  model.on('change:hint', () => { hint.textContent = model.get('hint'); });
  const state = {
    cleanup: [], timer: null,
    show(root) {
      const now = document.activeElement;
      const inside = !!now && root.contains(now);
      const mode = !inside ? 'inactive' : editing(now) ? 'typing' : 'active';
      el.dataset.keys = mode;
      status.textContent = { active: %(active)s, typing: %(typing)s, inactive: %(inactive)s }[mode];
      status.style.color = mode === 'active' ? '#2e7d32' : '#b26a00';
    },
  };
  state.show(el);
  attach(el, model, state, 0);
  return () => { clearTimeout(state.timer); state.cleanup.forEach((f) => f()); };
}
export default { render };
""" % {"panel": PANEL_CLASS, "active": repr(ACTIVE), "typing": repr(TYPING),
       "inactive": repr(INACTIVE)}


class KeyListener(anywidget.AnyWidget):
    """Forwards the declared keys, pressed anywhere in the panel, to one Python callback.

    Parameters
    ----------
    keys : list of str
        ``KeyboardEvent.key`` values to forward (others are left to the browser).
    hint : dict
        Key (or key group) -> what it does, shown after the focus state: "1-5 rate".
    on_key : callable
        Called with the key, on the kernel's thread, for every declared key pressed.
    """

    _esm = _ESM
    # (not "keys": Widget.keys already lists the synced trait names)
    bound_keys = traitlets.List(traitlets.Unicode(),
                                help="Keys (KeyboardEvent.key values) forwarded.").tag(sync=True)
    hint = traitlets.Unicode("", help="Shown to the person: which key does what.").tag(sync=True)

    def __init__(self, keys: list[str], hint: dict[str, str], on_key: Callable[[str], None],
                 **kwargs):
        super().__init__(bound_keys=list(keys), hint=hint_text(hint), **kwargs)
        self._on_key = on_key
        self.on_msg(lambda _widget, content, _buffers: self.press(content.get("key", "")))

    def set_keys(self, keys: list[str], hint: dict[str, str]) -> None:
        """Change the keys forwarded and the hint shown, e.g. when a panel changes mode (a
        candidate list opens: the digits pick a candidate instead of rating). The page reads
        both at every key press, so the change is in force at once."""
        keys, text = list(keys), hint_text(hint)
        if keys != self.bound_keys:
            self.bound_keys = keys
        if text != self.hint:
            self.hint = text

    def press(self, key: str) -> None:
        """Act as if ``key`` was pressed in the panel (the path a real key takes)."""
        if key in self.bound_keys:
            self._on_key(key)


def hint_text(hint: dict[str, str]) -> str:
    """The hint a person reads: ``{"1-5": "rate", "u": "undo"}`` -> "Keys: 1-5 rate · u undo"."""
    return "Keys: " + " · ".join(f"{k} {what}" for k, what in hint.items())
