"""Cursor pagination for the API's lists: newest first, or in a list's own order.

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
    """The page of `rows` (ordered by `by`, a timestamp, then pk, both descending) after
    `cursor`, and the absolute URL of the next page (None on the last). 400 for a cursor that
    was not made here or a limit outside 1..MAX_LIMIT."""
    return _page(request, rows, by=by, cursor=cursor, limit=limit, newest_first=True)


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
    return _page(request, rows, by=by, cursor=cursor, limit=limit, newest_first=False)


def _page(request, rows, *, by: str, cursor, limit: int, newest_first: bool):
    if not 1 <= limit <= MAX_LIMIT:
        raise HttpError(400, f"limit must be between 1 and {MAX_LIMIT}.")
    sign, beyond = ("-", "lt") if newest_first else ("", "gt")
    rows = rows.order_by(f"{sign}{by}", f"{sign}pk")
    if cursor:
        key, pk = _decode(cursor, moment=newest_first)
        rows = rows.filter(Q(**{f"{by}__{beyond}": key}) | Q(**{by: key, f"pk__{beyond}": pk}))
    page = list(rows[: limit + 1])
    if len(page) <= limit:
        return page, None
    page = page[:limit]
    last = page[-1]
    return page, _next_url(request, _encode(getattr(last, by), last.pk))


def _encode(key: datetime | int, pk: int) -> str:
    """A timestamp is written as `at`, an integer key as `key`."""
    position = {"at": key.isoformat()} if isinstance(key, datetime) else {"key": key}
    text = json.dumps({**position, "id": pk}, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _decode(cursor: str, *, moment: bool) -> tuple[datetime | int, int]:
    """The position a cursor holds: a timestamp (`moment`) or an integer key, and the id."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        position = json.loads(base64.urlsafe_b64decode(padded.encode()))
        pk = position["id"]
        key = datetime.fromisoformat(position["at"]) if moment else position["key"]
        integers = (pk,) if moment else (key, pk)
        if moment and key.tzinfo is None:
            raise ValueError("a timestamp without its zone")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in integers):
            raise ValueError("incomplete position")
    except (binascii.Error, ValueError, TypeError, KeyError, UnicodeError):
        raise HttpError(400, "cursor is not valid: pass the `next` link as it was given.") from None
    return key, pk


def _next_url(request: HttpRequest, cursor: str) -> str:
    query = request.GET.copy()
    query["cursor"] = cursor
    return request.build_absolute_uri(f"{request.path}?{urlencode(sorted(query.items()))}")
