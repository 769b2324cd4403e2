"""Cursor pagination for the API's lists, newest first.

A page is the next `limit` rows after a position in a fixed order (a timestamp, then the id
to break ties, both descending): a keyset, not an offset, so rows added or removed while a
client walks the list neither repeat nor skip the rows it has not seen, and a deep page costs
what the first does. The cursor is that position, opaque to clients (URL-safe base64 of a
small JSON document): they follow `next`, which keeps every other query parameter.
"""

import base64
import binascii
import json
from datetime import datetime
from urllib.parse import urlencode

from django.db.models import Q, QuerySet
from django.http import HttpRequest
from ninja.errors import HttpError

DEFAULT_LIMIT = 100
MAX_LIMIT = 500


def paginate(
    request: HttpRequest,
    rows: QuerySet,
    *,
    by: str,
    cursor: str | None,
    limit: int,
) -> tuple[list, str | None]:
    """The page of `rows` (ordered by `by` then pk, both descending) after `cursor`, and the
    absolute URL of the next page (None on the last). 400 for a cursor that was not made
    here or a limit outside 1..MAX_LIMIT."""
    if not 1 <= limit <= MAX_LIMIT:
        raise HttpError(400, f"limit must be between 1 and {MAX_LIMIT}.")
    rows = rows.order_by(f"-{by}", "-pk")
    if cursor:
        moment, pk = _decode(cursor)
        rows = rows.filter(Q(**{f"{by}__lt": moment}) | Q(**{by: moment, "pk__lt": pk}))
    page = list(rows[: limit + 1])
    if len(page) <= limit:
        return page, None
    page = page[:limit]
    last = page[-1]
    return page, _next_url(request, _encode(getattr(last, by), last.pk))


def _encode(moment: datetime, pk: int) -> str:
    text = json.dumps({"at": moment.isoformat(), "id": pk}, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _decode(cursor: str) -> tuple[datetime, int]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        position = json.loads(base64.urlsafe_b64decode(padded.encode()))
        moment = datetime.fromisoformat(position["at"])
        pk = position["id"]
        if moment.tzinfo is None or not isinstance(pk, int) or isinstance(pk, bool):
            raise ValueError("incomplete position")
    except (binascii.Error, ValueError, TypeError, KeyError, UnicodeError):
        raise HttpError(400, "cursor is not valid: pass the `next` link as it was given.") from None
    return moment, pk


def _next_url(request: HttpRequest, cursor: str) -> str:
    query = request.GET.copy()
    query["cursor"] = cursor
    return request.build_absolute_uri(f"{request.path}?{urlencode(sorted(query.items()))}")


def paginate_in_order(
    request: HttpRequest,
    rows: QuerySet,
    *,
    by: str,
    cursor: str | None,
    limit: int,
) -> tuple[list, str | None]:
    """Like `paginate`, for lists read in their own order rather than newest first: `by` an
    integer field (a position, or "pk"), ascending, the id breaking ties."""
    if not 1 <= limit <= MAX_LIMIT:
        raise HttpError(400, f"limit must be between 1 and {MAX_LIMIT}.")
    rows = rows.order_by(by, "pk")
    if cursor:
        key, pk = _decode_key(cursor)
        rows = rows.filter(Q(**{f"{by}__gt": key}) | Q(**{by: key, "pk__gt": pk}))
    page = list(rows[: limit + 1])
    if len(page) <= limit:
        return page, None
    page = page[:limit]
    last = page[-1]
    text = json.dumps({"key": getattr(last, by), "id": last.pk}, separators=(",", ":"))
    return page, _next_url(request, base64.urlsafe_b64encode(text.encode()).decode().rstrip("="))


def _decode_key(cursor: str) -> tuple[int, int]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        position = json.loads(base64.urlsafe_b64decode(padded.encode()))
        key, pk = position["key"], position["id"]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (key, pk)):
            raise ValueError("incomplete position")
    except (binascii.Error, ValueError, TypeError, KeyError, UnicodeError):
        raise HttpError(400, "cursor is not valid: pass the `next` link as it was given.") from None
    return key, pk
