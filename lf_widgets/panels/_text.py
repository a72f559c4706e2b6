"""Rendering untrusted text (model output, prompts, critiques, names) safely.

ipywidgets' ``HTML`` widget assigns its value to ``innerHTML`` without sanitising, so a sample
like ``<img src=x onerror=...>`` would run script in the user's page. Everything that reaches an
HTML widget goes through :func:`escaped_html`.
"""

from __future__ import annotations

import html

__all__ = ["escaped_html"]


def escaped_html(text: str, *, style: str = "", tag: str = "div") -> str:
    """``text`` escaped (quotes too) inside one element with a fixed, trusted inline style."""
    safe_style = html.escape(style, quote=True)
    return f'<{tag} style="{safe_style}">{html.escape(str(text), quote=True)}</{tag}>'
