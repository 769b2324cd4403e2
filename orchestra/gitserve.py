"""The central repositories over git's smart HTTP, for workers on other machines.

`/git/<project-slug>.git/info/refs?service=...`, `.../git-upload-pack` and
`.../git-receive-pack` run `git http-backend` (CGI) on the project's repository. Every request
shows a worker credential (`Authorization: Bearer <token>`, or basic auth with the token as
the password); without a live one nothing runs (401). A push may only create or update step
branches (`refs/heads/orchestra/run-<id>-steps/<key>`) of the project's existing steps: its
command list is read before git runs, and anything else refuses the whole push. The refusal is
answered the way git servers answer a rejected ref, a report-status naming each ref and why
(`git push` prints it and fails); a client that asked for no report gets a 403 with the reason.
The request body is read as a stream (a push may be large) and the reply is streamed back.
"""

import base64
import contextlib
import gzip
import logging
import re
import subprocess
import threading
import zlib
from collections.abc import AsyncIterator, Iterator
from typing import BinaryIO, NamedTuple

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from agents.workspace import gitcmd
from orchestra.credentials import worker_for_token
from orchestra.engine.workspaces import central_repository
from orchestra.models import Project, Step

logger = logging.getLogger(__name__)

SERVICES = {"git-upload-pack", "git-receive-pack"}
ZERO = "0" * 40
_STEP_REF = re.compile(r"refs/heads/orchestra/run-(\d+)-steps/([a-z0-9_-]+)")
_RUN_REF = re.compile(r"refs/heads/orchestra/run-\d+")
_CHUNK = 64 * 1024
# The longest command list read before git runs: a push names a handful of refs.
_MAX_COMMANDS = 1000
# The most data one side-band packet carries: 65520 bytes a pkt-line, less length and band.
_SIDEBAND_DATA = {"side-band-64k": 65515, "side-band": 995}


class Refused(Exception):
    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


class Push(NamedTuple):
    """A push's command list as read before git runs."""

    head: bytes  # the bytes read, which git must still receive
    commands: list[tuple[str, str, str]]  # (old, new, ref)
    capabilities: set[str]


def _refusal(status: int, reason: str) -> HttpResponse:
    response = HttpResponse(reason + "\n", status=status, content_type="text/plain")
    if status == 401:
        response["WWW-Authenticate"] = 'Basic realm="Orchestra git", charset="UTF-8"'
    return response


@csrf_exempt
def git_http(request: HttpRequest, slug: str, path: str) -> HttpResponse:
    """One request of git's smart HTTP protocol on the project's central repository."""
    token = _token(request)
    credential = worker_for_token(token)
    if credential is None:
        reason = (
            "a worker credential is required (issue one with `orchestra worker-token add "
            "NAME` and set it as ORCHESTRA_GIT_TOKEN)"
            if not token
            else "this worker credential is unknown or revoked"
        )
        return _refusal(401, reason)
    service = _service(request, path)
    if service is None:
        return _refusal(404, "only git's smart HTTP protocol is served here")
    project = Project.objects.filter(slug=slug).first()
    if project is None:
        return _refusal(404, f"no project {slug!r}")
    body: BinaryIO = request
    encoding = request.headers.get("Content-Encoding", "")
    if request.method == "POST" and encoding == "gzip":
        body = gzip.GzipFile(fileobj=request, mode="rb")  # type: ignore[assignment]
    elif request.method == "POST" and encoding:
        return _refusal(415, f"unsupported Content-Encoding {encoding!r}")
    head = b""
    if request.method == "POST" and service == "git-receive-pack":
        try:
            push = _read_push(body)
        except Refused as refused:
            logger.warning("push by %s refused: %s", credential.name, refused.reason)
            return _refusal(refused.status, refused.reason)
        refusals = _refusals(project, push.commands)
        if refusals:
            for ref, reason in refusals.items():
                logger.warning("push by %s refused: %s: %s", credential.name, ref, reason)
            return _refused_push(push, refusals, body)
        head = push.head
    return _run_backend(request, project, path, credential.name, head, body)


def _token(request: HttpRequest) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            return ""
        return decoded.partition(":")[2]
    return ""


def _service(request: HttpRequest, path: str) -> str | None:
    """The git service the request is for, or None for anything but the smart protocol."""
    if request.method == "GET" and path == "info/refs":
        service = request.GET.get("service", "")
        return service if service in SERVICES else None
    if request.method == "POST" and path in SERVICES:
        return path
    return None


# --- what a push may change ---------------------------------------------------------------------
def _read_push(body: BinaryIO) -> Push:
    """Read the push's command list (pkt-lines up to the flush) and the capabilities the
    client asked for (after a NUL on the first command)."""
    read = bytearray()
    commands: list[tuple[str, str, str]] = []
    capabilities: set[str] = set()
    while True:
        size_hex = _read_exactly(body, 4, read)
        try:
            size = int(size_hex, 16)
        except ValueError:
            raise Refused(400, "malformed push: a pkt-line length is not hexadecimal") from None
        if size == 0:
            break
        if size < 4:
            raise Refused(400, "malformed push: a pkt-line is too short")
        line, _, asked = _read_exactly(body, size - 4, read).partition(b"\0")
        if asked and not commands:
            capabilities = set(asked.decode(errors="replace").split())
        line = line.rstrip(b"\n").decode()
        if line.startswith("shallow "):
            continue
        parts = line.split(" ")
        if len(parts) != 3:
            raise Refused(400, f"malformed push command {line[:200]!r}")
        commands.append((parts[0], parts[1], parts[2]))
        if len(commands) > _MAX_COMMANDS:
            raise Refused(400, "a push may change at most 1000 refs")
    return Push(bytes(read), commands, capabilities)


def _refusals(project: Project, commands: list[tuple[str, str, str]]) -> dict[str, str]:
    """Why each refused command is refused, by ref: only the creation or update of one of
    the project's step branches is allowed."""
    refusals = {}
    for old, new, ref in commands:
        try:
            _check_command(project, old, new, ref)
        except Refused as refused:
            refusals[ref] = refused.reason
    return refusals


def _read_exactly(body: BinaryIO, size: int, read: bytearray) -> bytes:
    data = body.read(size)
    if len(data) != size:
        raise Refused(400, "malformed push: the command list ends early")
    read.extend(data)
    return data


def _check_command(project: Project, old: str, new: str, ref: str) -> None:
    if new.strip("0") == "":
        raise Refused(403, f"refusing to delete {ref}: workers never delete refs")
    match = _STEP_REF.fullmatch(ref)
    if match is None:
        what = " (a run branch)" if _RUN_REF.fullmatch(ref) else ""
        raise Refused(
            403,
            f"refusing to update {ref}{what}: workers may push only step branches "
            "(refs/heads/orchestra/run-<id>-steps/<key>)",
        )
    run_id, key = int(match.group(1)), match.group(2)
    if not Step.objects.filter(run_id=run_id, run__project=project, key=key).exists():
        raise Refused(
            403, f"refusing to update {ref}: run {run_id} of {project.slug} has no step {key!r}"
        )


def _refused_push(push: Push, refusals: dict[str, str], body: BinaryIO) -> HttpResponse:
    """The reply to a push refused before git ran: git's report-status (`unpack ok`, then
    `ng <ref> <reason>` for every ref, since one refusal refuses the whole push), in the
    side band when the client asked for one. The pack the client sent is read and dropped
    first, so the connection stays usable."""
    with contextlib.suppress(OSError, EOFError, zlib.error):
        while body.read(_CHUNK):
            pass
    if not push.capabilities & {"report-status", "report-status-v2"}:
        return _refusal(403, "; ".join(refusals.values()))
    report = _pkt_line(b"unpack ok\n")
    for _old, _new, ref in push.commands:
        reason = refusals.get(ref, "not pushed: another ref of this push was refused")
        report += _pkt_line(f"ng {ref} {reason}\n".encode())
    report += b"0000"
    band = next((_SIDEBAND_DATA[b] for b in _SIDEBAND_DATA if b in push.capabilities), 0)
    if band:
        chunks = [report[i : i + band] for i in range(0, len(report), band)]
        report = b"".join(_pkt_line(b"\x01" + chunk) for chunk in chunks) + b"0000"
    response = HttpResponse(report, content_type="application/x-git-receive-pack-result")
    response["Cache-Control"] = "no-cache"
    return response


def _pkt_line(data: bytes) -> bytes:
    return b"%04x" % (len(data) + 4) + data


# --- the CGI ------------------------------------------------------------------------------------
def _run_backend(
    request: HttpRequest, project: Project, path: str, worker: str, head: bytes, body: BinaryIO
) -> HttpResponse:
    repo = central_repository(project)
    env = {
        **gitcmd.environment(),
        "GIT_PROJECT_ROOT": str(repo.parent),
        "PATH_INFO": f"/{repo.name}/{path}",
        "GIT_HTTP_EXPORT_ALL": "1",
        "REQUEST_METHOD": request.method or "GET",
        "QUERY_STRING": request.META.get("QUERY_STRING", ""),
        "CONTENT_TYPE": request.META.get("CONTENT_TYPE", ""),
        "REMOTE_USER": worker,
        "REMOTE_ADDR": request.META.get("REMOTE_ADDR", ""),
        "GIT_PROTOCOL": request.headers.get("Git-Protocol", ""),
        **gitcmd.config_environment(),
    }
    process = subprocess.Popen(  # noqa: S603 - a fixed command, no shell
        ["git", "http-backend"],  # noqa: S607
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    feeder = threading.Thread(
        target=_feed, args=(process, head, body if request.method == "POST" else None), daemon=True
    )
    feeder.start()
    errors: list[bytes] = []
    drain = threading.Thread(target=lambda: errors.append(process.stderr.read()), daemon=True)
    drain.start()
    status, headers = _read_headers(process.stdout)
    if status is None:
        process.wait()
        drain.join()
        logger.error("git http-backend gave no reply: %s", b"".join(errors)[-2000:])
        return _refusal(502, "git http-backend gave no reply")
    ending = (process, feeder, drain, errors)
    # Under ASGI a synchronous iterator would be read whole before the first byte is sent.
    stream = _astream(ending) if isinstance(request, ASGIRequest) else _stream(ending)
    response = StreamingHttpResponse(stream, status=status)
    for name, value in headers:
        response[name] = value
    return response


def _feed(process: subprocess.Popen, head: bytes, body: BinaryIO | None) -> None:
    try:
        if body is not None:
            process.stdin.write(head)
            while chunk := body.read(_CHUNK):
                process.stdin.write(chunk)
    except (BrokenPipeError, OSError):  # git stopped reading: its reply says why
        pass
    finally:
        with contextlib.suppress(OSError):
            process.stdin.close()


def _read_headers(stdout) -> tuple[int | None, list[tuple[str, str]]]:
    status, headers = 200, []
    while True:
        line = stdout.readline()
        if not line:
            return None, []
        line = line.rstrip(b"\r\n").decode("latin-1")
        if not line:
            return status, headers
        name, _, value = line.partition(":")
        if name.lower() == "status":
            status = int(value.strip().split(" ", 1)[0])
        else:
            headers.append((name.strip(), value.strip()))


def _stream(ending: tuple) -> Iterator[bytes]:
    try:
        while chunk := ending[0].stdout.read1(_CHUNK):
            yield chunk
    finally:
        _end(*ending)


async def _astream(ending: tuple) -> AsyncIterator[bytes]:
    read = sync_to_async(ending[0].stdout.read1, thread_sensitive=False)
    try:
        while chunk := await read(_CHUNK):
            yield chunk
    finally:
        await sync_to_async(_end, thread_sensitive=False)(*ending)


def _end(process, feeder, drain, errors) -> None:
    process.stdout.close()
    code = process.wait()
    feeder.join()
    drain.join()
    if code != 0:
        logger.warning("git http-backend exited %s: %s", code, b"".join(errors)[-2000:])
