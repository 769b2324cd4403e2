"""Unified diffs on the dashboard: `{% load diffs %}`, then `text|diff_lines`."""

import re
from dataclasses import dataclass

from django import template

register = template.Library()

HUNK = re.compile(r"^@@ -\d+(?:,(\d+))? \+\d+(?:,(\d+))? @@")


@dataclass(frozen=True)
class DiffLine:
    kind: str  # file | hunk | add | del | ctx | note
    text: str


@register.filter
def diff_lines(text: str) -> list[DiffLine]:
    """Each line of a unified diff with what it is. Inside a hunk the header's line counts
    decide, so a removed line that reads `-- x` is not taken for a `--- file` header."""
    lines = []
    old_left = new_left = 0
    for line in (text or "").splitlines():
        if old_left > 0 or new_left > 0:
            if line.startswith("+"):
                kind, new_left = "add", new_left - 1
            elif line.startswith("-"):
                kind, old_left = "del", old_left - 1
            elif line.startswith("\\"):
                kind = "note"  # "\ No newline at end of file"
            else:
                kind, old_left, new_left = "ctx", old_left - 1, new_left - 1
        elif match := HUNK.match(line):
            kind = "hunk"
            old_left = int(match[1]) if match[1] is not None else 1
            new_left = int(match[2]) if match[2] is not None else 1
        elif line.startswith(("--- ", "+++ ")):
            kind = "file"
        else:
            kind = "note"  # e.g. "(no diff: ...)" from the engine
        lines.append(DiffLine(kind, line))
    return lines
