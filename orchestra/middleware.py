"""The middleware chain run in one thread under ASGI."""


class OneThreadChain:
    """Last in MIDDLEWARE, passing each request on as it is. It can run only synchronously,
    so Django runs every middleware outside it synchronously too, in one thread a request:
    the built-in middleware (and CSP's), able to run either way, were each called by the
    event loop through a hand-over to a thread and back, for each of their hooks: eighteen
    hand-overs for a client's poll of a run's new events, each a thread switch and a copy of
    the context; five now (tests/orchestra/test_api.py). That poll cost the embedded server a
    fifth less CPU."""

    sync_capable = True
    async_capable = False

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)
