"""Text that can be stored and sent on: one rule for every field people and scripts fill in.

JSON may carry a lone surrogate (`"\\ud800"`) and any control character, NUL included; Python
keeps them in a `str`, but PostgreSQL refuses NUL in text, UTF-8 encoders refuse lone
surrogates, and the same text later breaks a page, an event or an audit export. So such text
is refused where it comes in, with a message, before anything is stored. Tabs, newlines and
carriage returns are ordinary text.
"""

import math
from typing import Annotated

from django.core.exceptions import ValidationError
from ninja import Schema
from pydantic import AfterValidator, field_validator
from pydantic_core import PydanticCustomError

ALLOWED_CONTROLS = frozenset("\t\n\r")


def text_problem(value: str) -> str | None:
    """Why `value` cannot be stored, or None when it can."""
    for char in value:
        code = ord(char)
        if 0xD800 <= code <= 0xDFFF:
            return "contains a lone surrogate (not valid Unicode)"
        if (code < 0x20 and char not in ALLOWED_CONTROLS) or code == 0x7F:
            return "contains a NUL byte" if code == 0 else "contains a control character"
    return None


def first_bad_text(value: object, path: str = "") -> str | None:
    """The first string in a JSON-like value (keys included) that cannot be stored, as
    "path: problem" (the path like `plan_edits.0.brief.objective`), or None."""
    found = _find(value, path)
    return f"{found[0] or 'value'}: {found[1]}" if found else None


def _find(value: object, path: str) -> tuple[str, str] | None:
    if isinstance(value, str):
        problem = text_problem(value)
        return (path, problem) if problem else None
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and (problem := text_problem(key)):
                return path, f"has a key that {problem}"
            if found := _find(item, f"{path}.{key}" if path else str(key)):
                return found
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            if found := _find(item, f"{path}.{index}" if path else str(index)):
                return found
    return None


def reject_control_text(value: object) -> None:
    """Django validator (forms, model fields): refuses text with NUL, other control
    characters or lone surrogates, nested JSON included."""
    found = _find(value, "")
    if found:
        # Forms name the field themselves: say only what is wrong with it.
        raise ValidationError(f"The text {found[1]}.", code="control_text")


def json_problem(value: object) -> str | None:
    """What makes a JSON-like value unstorable, or None: text as above, or a number that is
    not finite (Python's JSON reader takes `NaN` and `1e999`; PostgreSQL's jsonb does not).
    Says where inside the value, e.g. "0.brief.objective contains a NUL byte"."""
    if found := _find(value, ""):
        return f"{found[0] or 'the text'} {found[1]}"
    if (path := _non_finite(value, "")) is not None:
        return f"{path or 'the number'} is not a finite number"
    return None


def _non_finite(value: object, path: str) -> str | None:
    if isinstance(value, float) and not math.isfinite(value):
        return path
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = _non_finite(item, f"{path}.{key}" if path else str(key))
        if found is not None:
            return found
    return None


def _clean(value):
    problem = json_problem(value)
    if problem:
        raise PydanticCustomError("control_text", "{problem}", {"problem": problem})
    return value


# For ninja schemas and parameters: `slug: CleanText`.
CleanText = Annotated[str, AfterValidator(_clean)]


class CleanInput(Schema):
    """Base of every API input schema: each field (nested JSON included) is checked by
    `json_problem`, so a new field cannot forget it."""

    @field_validator("*", mode="after")
    @classmethod
    def _storable(cls, value):
        return _clean(value)
