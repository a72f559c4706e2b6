"""One display convention for every panel a Session verb shows.

``session.rate(...)`` displays its panel at once (so it appears even when the call is not the
cell's last expression) and returns it (for method twins). As a cell's last expression the
returned panel would be displayed a second time, with a second set of buttons; IPython asks an
object with ``_ipython_display_`` to display itself, and a panel already shown does nothing.
"""

from __future__ import annotations

__all__ = ["DisplayOnce"]



class DisplayOnce:
    """Mixin for panels: the first display shows the widget, later ones show nothing; closing
    it also unsubscribes the listeners it keeps in ``_unsubscribe``."""

    shown = False  # set on the first display

    def _ipython_display_(self) -> None:
        if self.shown:
            return
        self.shown = True
        from IPython.display import display

        bundle = self._repr_mimebundle_()
        if bundle:
            display(bundle, raw=True)

    def close(self) -> None:
        """Stop listening to the session (``self._unsubscribe``), then close the widgets."""
        for unsubscribe in getattr(self, "_unsubscribe", []):
            try:
                unsubscribe()
            except ValueError:  # already removed
                pass
        self._unsubscribe = []
        super().close()
