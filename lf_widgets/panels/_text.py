"""Rendering untrusted text (model output, prompts, critiques, names, messages) safely.

ipywidgets' ``HTML`` widget assigns its value to ``innerHTML`` without sanitising, so a sample
like ``<img src=x onerror=...>`` would run script in the user's page; JupyterLab's MathJax
typesets ``Label`` values and widget descriptions, so ``$\\href{https://…}{click}$`` there becomes
a link. Untrusted text therefore never goes into a ``Label`` or a ``description``: it goes into an
``HTML`` widget through :func:`escaped_html`, or into plotly labels (which read a few tags and
``$…$`` maths too) through :func:`escaped_text`.
"""

from __future__ import annotations

import html

__all__ = ["NO_MATH", "escaped_html", "escaped_text"]


# MathJax (which JupyterLab runs over widget labels and may run over outputs) skips elements with
# these classes; "$" is also written as an entity, so no "$...$" in untrusted text is ever maths.
NO_MATH = "tex2jax_ignore mathjax_ignore"


def escaped_text(text, *, quote: bool = True) -> str:
    """``text`` with ``& < >``, ``$`` and (``quote``) ``" '`` as entities: shown literally, never
    read as markup or as maths. Plot labels take ``quote=False``: plotly decodes numeric entities
    but only a few named ones (``&quot;`` would show as such), and a quote starts no tag."""
    return html.escape(str(text), quote=quote).replace("$", "&#36;")


def escaped_html(text, *, style: str = "", tag: str = "div") -> str:
    """``text`` escaped (:func:`escaped_text`) inside one element with a fixed, trusted inline
    style, marked so that MathJax leaves it alone: it shows literally, never as HTML or maths."""
    safe_style = html.escape(style, quote=True)
    return f'<{tag} class="{NO_MATH}" style="{safe_style}">{escaped_text(text)}</{tag}>'
