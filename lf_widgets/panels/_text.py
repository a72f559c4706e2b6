"""Rendering untrusted text (model output, prompts, critiques, names) safely.

ipywidgets' ``HTML`` widget assigns its value to ``innerHTML`` without sanitising, so a sample
like ``<img src=x onerror=...>`` would run script in the user's page. Everything that reaches an
HTML widget goes through :func:`escaped_html`.
"""

from __future__ import annotations

import html

__all__ = ["escaped_html"]


# MathJax (which JupyterLab runs over widget labels and may run over outputs) skips elements with
# these classes; "$" is also written as an entity, so no "$...$" in untrusted text is ever maths.
NO_MATH = "tex2jax_ignore mathjax_ignore"


def escaped_html(text: str, *, style: str = "", tag: str = "div") -> str:
    """``text`` escaped (quotes too, and ``$``) inside one element with a fixed, trusted inline
    style, marked so that MathJax leaves it alone: it shows literally, never as HTML or maths."""
    safe_style = html.escape(style, quote=True)
    body = html.escape(str(text), quote=True).replace("$", "&#36;")
    return f'<{tag} class="{NO_MATH}" style="{safe_style}">{body}</{tag}>'
