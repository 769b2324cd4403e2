"""Failed-login throttling (django-axes) for sign-ins that come over HTTP."""

from axes.backends import AxesStandaloneBackend


class LoginThrottle(AxesStandaloneBackend):
    """django-axes' check, for authentication that has a request: the dashboard and admin
    sign-in forms always pass theirs. Without one (the CLI, management commands, the test
    client's `login`) nobody is guessing over the network, so there is nothing to throttle;
    axes itself would refuse to authenticate at all."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username, password, **kwargs)
