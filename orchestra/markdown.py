"""Markdown as people read it: a run's report is written by a model, in Markdown, and both
the dashboard and the API (`report_html`) give it out rendered, through this one renderer.

markdown-it-py renders CommonMark (with tables) and HTML inside the Markdown is left as text
(`html: False`); nh3 then keeps only harmless tags and attributes, so whatever a model
writes, the page gets headings, lists, code and links, never a script or an event handler.
"""

from __future__ import annotations

import nh3
from django.utils.safestring import SafeString, mark_safe
from markdown_it import MarkdownIt

_renderer = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")

_TAGS = {
    "a", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr",
    "li", "ol", "p", "pre", "strong", "table", "tbody", "td", "th", "thead", "tr", "ul",
}  # fmt: skip
# No style attributes: a model must not restyle (or hide parts of) the page.
_ATTRIBUTES = {"a": {"href", "title"}, "ol": {"start"}}


def render_markdown(text: str | None) -> SafeString:
    """`text` as sanitised HTML, safe to put in a template as is."""
    html = _renderer.render(text or "")
    return mark_safe(  # noqa: S308 - nh3 has just removed everything but the allowed tags
        nh3.clean(
            html,
            tags=_TAGS,
            attributes=_ATTRIBUTES,
            url_schemes={"http", "https", "mailto"},
            link_rel="noopener noreferrer nofollow",
        )
    )
