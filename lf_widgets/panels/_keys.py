"""Keyboard shortcuts for a panel: a tiny anywidget that forwards the keys a panel declares.

The component finds its panel's root element (the closest ``.lfw-panel``), listens for keydown
there, and sends each declared key to Python. It also marks the root with
``data-lm-suppress-shortcuts``: JupyterLab resolves a key by walking up from the focused element
and stops at that attribute, so pressing ``a`` on a focused panel button votes "A" instead of
inserting a notebook cell. Keys typed into text fields (critique, correction) are left alone.
Where custom widgets cannot run, the panels still work by mouse: every key has a button.
"""

from __future__ import annotations

from collections.abc import Callable

import anywidget
import traitlets

__all__ = ["KeyListener", "PANEL_CLASS"]

PANEL_CLASS = "lfw-panel"  # panels add this CSS class so the listener can find its root

_ESM = """
function attach(el, model, tries) {
  const root = el.closest('.%(panel)s');
  if (!root) {  // the view may not be in the page yet
    if (tries < 100) setTimeout(() => attach(el, model, tries + 1), 50);
    return () => {};
  }
  root.setAttribute('data-lm-suppress-shortcuts', 'true');
  if (!root.hasAttribute('tabindex')) root.setAttribute('tabindex', '0');
  const onKey = (event) => {
    const t = event.target;
    if (t && t.closest && t.closest('textarea, input, select, [contenteditable="true"]')) return;
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (!model.get('bound_keys').includes(event.key)) return;
    event.preventDefault();
    event.stopPropagation();
    model.send({ key: event.key });
  };
  root.addEventListener('keydown', onKey);
  el._lfwCleanup = () => root.removeEventListener('keydown', onKey);
}
function render({ model, el }) {
  el.classList.add('lfw-keys');
  const hint = document.createElement('span');
  hint.textContent = model.get('hint');  // textContent: never parsed as HTML
  hint.style.cssText = 'font-size: 0.85em; color: #666;';
  el.appendChild(hint);
  model.on('change:hint', () => { hint.textContent = model.get('hint'); });
  attach(el, model, 0);
  return () => { if (el._lfwCleanup) el._lfwCleanup(); };
}
export default { render };
""" % {"panel": PANEL_CLASS}


class KeyListener(anywidget.AnyWidget):
    """Forwards the declared keys, pressed anywhere in the panel, to one Python callback."""

    _esm = _ESM
    # (not "keys": Widget.keys already lists the synced trait names)
    bound_keys = traitlets.List(traitlets.Unicode(),
                                help="Keys (KeyboardEvent.key values) forwarded.").tag(sync=True)
    hint = traitlets.Unicode("", help="Shown to the person: which key does what.").tag(sync=True)

    def __init__(self, keys: list[str], hint: dict[str, str], on_key: Callable[[str], None],
                 **kwargs):
        super().__init__(bound_keys=list(keys), hint="Keys: " + " · ".join(
            f"{k} {what}" for k, what in hint.items()), **kwargs)
        self._on_key = on_key
        self.on_msg(lambda _widget, content, _buffers: self.press(content.get("key", "")))

    def press(self, key: str) -> None:
        """Act as if ``key`` was pressed in the panel (the path a real key takes)."""
        if key in self.bound_keys:
            self._on_key(key)
