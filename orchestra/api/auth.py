"""The two ways in: a bearer token for scripts and the CLI, the session for the dashboard."""

from datetime import timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.http import HttpRequest
from django.utils import timezone
from ninja.security import HttpBearer, SessionAuth

from orchestra.models import ApiToken
from orchestra.prepared import PreparedRead

# A token's last use is recorded at most this often: a busy client must not turn every read
# into a write.
TOKEN_TOUCH_INTERVAL = timedelta(minutes=1)
# Every request a script or the CLI makes reads its token: compiled once per process.
_TOKEN = PreparedRead(
    "an API token", lambda digest: ApiToken.objects.select_related("user").filter(digest=digest)
)


class BearerToken(HttpBearer):
    """`Authorization: Bearer orc_...`, looked up by the SHA-256 digest (the only thing stored)."""

    def authenticate(self, request: HttpRequest, token: str) -> AbstractBaseUser | None:
        if not token:
            return None
        try:
            api_token = _TOKEN.get(ApiToken.digest_of(token.strip()))
        except ApiToken.DoesNotExist:
            return None
        if not api_token.user.is_active:
            return None
        now = timezone.now()
        if api_token.last_used_at is None or now - api_token.last_used_at >= TOKEN_TOUCH_INTERVAL:
            ApiToken.objects.filter(pk=api_token.pk).update(last_used_at=now)
        # Code that reads request.user (logging, helpers) sees the token's owner too.
        request.user = api_token.user
        return api_token.user


class SessionCookie(SessionAuth):
    """The logged-in browser session, with Django's CSRF check on unsafe methods.

    Without a logged-in user there is nothing to protect, so the CSRF check is skipped and the
    request falls through to 401 instead of a misleading 403 "CSRF check Failed".
    """

    def __call__(self, request: HttpRequest) -> AbstractBaseUser | None:
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            return None
        return super().__call__(request)
