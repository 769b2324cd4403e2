"""Login for every dashboard view, htmx requests included."""

from functools import wraps
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import HttpResponse


def login_required(view):
    """Like Django's decorator, but an htmx request from an expired session is told to load
    the sign-in page as a whole (`HX-Redirect`) instead of swapping it into a partial."""

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if request.user.is_authenticated:
            return view(request, *args, **kwargs)
        if getattr(request, "htmx", False):
            page = urlsplit(request.htmx.current_url or "/")
            path = page.path + (f"?{page.query}" if page.query else "")
            login = redirect_to_login(path, settings.LOGIN_URL)["Location"]
            return HttpResponse(status=204, headers={"HX-Redirect": login})
        return redirect_to_login(request.get_full_path(), settings.LOGIN_URL)

    return wrapper
