"""A bearer-token JSON client over real HTTP, for tests that talk to a server process."""

import json
import urllib.error
import urllib.request


class JsonApi:
    def __init__(self, base: str, token: str):
        self.base, self.token = base, token

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        """(status, JSON body); HTTP errors are returned, not raised."""
        request = urllib.request.Request(  # noqa: S310 - loopback test server
            self.base + path,
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")

    def run(self, run_id: int) -> dict:
        return self.call("GET", f"/api/runs/{run_id}")[1]

    def pending(self, run_id: int) -> list[dict]:
        return self.call("GET", f"/api/approvals?status=pending&run={run_id}")[1]["approvals"]

    def events(self, run_id: int) -> list[dict]:
        return self.call("GET", f"/api/runs/{run_id}/events?after=0")[1]["events"]
