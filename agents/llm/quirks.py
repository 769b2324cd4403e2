"""What real OpenAI-compatible endpoints do differently, recognised from what they answer.

Every server speaks "the OpenAI protocol" a little differently: vLLM and older Azure refuse
parameters they do not know (`parallel_tool_calls`, `stream_options`), OpenAI's reasoning
models refuse the `system` role and most local servers the `developer` one, each words its
context-length error its own way, and a wrong base URL answers a web page. These functions
read such answers; the client decides what to do about them.
"""

import html
import json
import re

#: Request parameters Orchestra can do without: dropped (and remembered) when refused.
OPTIONAL_PARAMS = ("parallel_tool_calls", "stream_options", "tool_choice", "temperature")
REFUSAL_WORDS = (
    "unrecognized",
    "unsupported",
    "not supported",
    "unknown",
    "extra inputs",
    "not permitted",
    "not allowed",
)
SYSTEM_ROLES = ("system", "developer")
CONTEXT_WORDS = (
    "context_length_exceeded",
    "maximum context length",
    "context length",
    "context window",
    "prompt is too long",
    "too many tokens",
)
CONTEXT_LIMIT = re.compile(
    r"(?:maximum context length is|context (?:length|window)(?: of| is)?|limit of|maximum of)"
    r"\s*(\d[\d,]*)\s*tokens",
    re.I,
)
CONTEXT_ASKED = re.compile(
    r"(?:resulted in|you requested|requested|prompt (?:is|has|contains)|got)\s*(\d[\d,]*)"
    r"\s*(?:input\s*)?tokens",
    re.I,
)
HTML_START = re.compile(r"^\s*(?:<!doctype html|<html|<head|<body)", re.I)
HTML_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.I | re.S)


def estimate_tokens(text: str) -> int:
    """About four characters a token: the estimate where an endpoint reports no usage."""
    return max(1, len(text) // 4)


def request_tokens(request: dict) -> int:
    return estimate_tokens(
        json.dumps(request.get("messages", [])) + json.dumps(request.get("tools", []))
    )


def unsupported_param(detail: str, request: dict) -> str | None:
    """The optional parameter of `request` that the endpoint's 400 says it does not take."""
    text = detail.lower()
    if not any(word in text for word in REFUSAL_WORDS):
        return None
    for name in OPTIONAL_PARAMS:
        if name in request and name in text:
            return name
    return None


def other_system_role(detail: str, role: str) -> str | None:
    """The system role to use instead of `role` when the endpoint refused `role`."""
    text = detail.lower()
    if "role" not in text or f"'{role}'" not in text and f'"{role}"' not in text:
        return None
    if not any(word in text for word in (*REFUSAL_WORDS, "does not support", "invalid")):
        return None
    return "developer" if role == "system" else "system"


def context_overflow(detail: str) -> tuple[int | None, int | None] | None:
    """(tokens asked, tokens allowed) when `detail` says the request is longer than the
    model's context window, None otherwise; a number the endpoint did not give is None."""
    text = detail.lower()
    if not any(word in text for word in CONTEXT_WORDS):
        return None
    limit, asked = CONTEXT_LIMIT.search(detail), CONTEXT_ASKED.search(detail)
    return (_number(asked), _number(limit))


def _number(match: re.Match | None) -> int | None:
    return int(match[1].replace(",", "")) if match else None


def html_page(body: str) -> str | None:
    """The title (or "untitled") of an HTML page, None when `body` is not one."""
    if not HTML_START.match(body):
        return None
    title = HTML_TITLE.search(body)
    text = " ".join(html.unescape(title[1]).split()) if title else ""
    return text[:120] or "untitled"


def html_hint(title: str, endpoint: str) -> str:
    return (
        f"an HTML page ({title!r}) instead of the API's JSON: is {endpoint} the API's base URL? "
        "It usually ends in /v1"
    )
