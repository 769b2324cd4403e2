"""Model providers as data: the client for a stored provider, the fallback used when the first
choice is rate-limited, overloaded or timing out, and the one-call connection test.

A provider's key is read when its client is built (from the environment variable it names,
or decrypted from the database) and handed to the SDK only: it is never logged, never put in
an error message (the endpoint's own words are scrubbed of it), and never shown back.
"""

import dataclasses
import logging
import os
import threading
import time
from decimal import Decimal, InvalidOperation

from agents.keys import KeyUnreadable, decrypt, encrypt
from agents.llm.base import ModelClient, ModelError, ModelReply
from agents.llm.openai_client import OpenAIModelClient
from agents.models import Provider
from orchestra.models import Membership

log = logging.getLogger(__name__)

_clients: dict[tuple[int, float], OpenAIModelClient] = {}
_lock = threading.Lock()


class KeyMissing(Exception):
    """The provider names an environment variable that is not set."""


def api_key_of(provider: Provider) -> str | None:
    """The provider's key, or None for a keyless local server."""
    if provider.api_key_encrypted:
        return decrypt(provider.api_key_encrypted)
    if provider.api_key_env:
        key = os.environ.get(provider.api_key_env, "")
        if not key:
            raise KeyMissing(
                f"the environment variable {provider.api_key_env} that holds the key of "
                f"provider {provider.name} is not set"
            )
        return key
    return None


def prices_of(provider: Provider) -> dict[str, tuple[Decimal, Decimal]]:
    """{"model": (input, output)} in USD per million tokens; entries that are not two numbers
    are left out (the model's cost is then unknown, not zero)."""
    prices = {}
    for model, pair in (provider.prices or {}).items():
        try:
            prices[model] = (Decimal(str(pair[0])), Decimal(str(pair[1])))
        except (TypeError, KeyError, IndexError, InvalidOperation):
            continue
    return prices


def build_client(provider: Provider, *, max_retries: int | None = None) -> OpenAIModelClient:
    """A new client for `provider` (the key is read now)."""
    return OpenAIModelClient(
        provider.base_url or None,
        api_key_of(provider),
        timeout=provider.timeout,
        max_retries=provider.max_retries if max_retries is None else max_retries,
        stream=provider.stream,
        name=provider.name,
        default_headers={str(k): str(v) for k, v in (provider.default_headers or {}).items()},
        stream_usage=provider.stream_usage,
        parallel_tool_calls=True if provider.parallel_tool_calls else None,
        system_role=provider.system_role,
        prices=prices_of(provider),
    )


def client_of(provider: Provider) -> ModelClient:
    """The shared client of `provider`, rebuilt when the provider was edited; a provider whose
    key cannot be read gets a client that fails each call saying why."""
    version = (provider.pk, provider.updated_at.timestamp())
    with _lock:
        client = _clients.get(version)
        if client is None:
            try:
                client = build_client(provider)
            except (KeyMissing, KeyUnreadable) as exc:
                return Unusable(provider, str(exc))
            for stale in [k for k in _clients if k[0] == provider.pk]:
                _clients.pop(stale).close()
            _clients[version] = client
        return client


def forget_clients() -> None:
    with _lock:
        for client in _clients.values():
            client.close()
        _clients.clear()


class Unusable:
    """Stands in for a provider that cannot be called, so the step fails with the reason."""

    def __init__(self, provider: Provider, reason: str):
        self.name = provider.name
        self.endpoint = provider.base_url or "https://api.openai.com/v1"
        self.reason = reason

    def complete(self, *, model, messages, tools, temperature) -> ModelReply:
        raise ModelError(f"Provider {self.name} cannot be used: {self.reason}")


class FallbackClient:
    """Asks `primary`; when it fails transiently (rate limit, overload, timeout, connection)
    after its own retries, asks `fallback` for `fallback_model`. The reply says so."""

    def __init__(self, primary: ModelClient, fallback: ModelClient, fallback_model: str):
        self.primary = primary
        self.fallback = fallback
        self.fallback_model = fallback_model
        self.endpoint = primary.endpoint
        self.name = getattr(primary, "name", "")

    def complete(self, *, model, messages, tools, temperature) -> ModelReply:
        try:
            return self.primary.complete(
                model=model, messages=messages, tools=tools, temperature=temperature
            )
        except ModelError as exc:
            if not exc.transient:
                raise
            first = f"{self.name or self.endpoint}/{model}: {exc}"
        log.warning("model call failed, falling back to %s: %s", self.fallback_model, first)
        try:
            reply = self.fallback.complete(
                model=self.fallback_model, messages=messages, tools=tools, temperature=temperature
            )
        except ModelError as exc:
            raise ModelError(
                f"{exc} (the fallback, after the first choice failed: {first})",
                transient=exc.transient,
                status=exc.status,
                detail=exc.detail,
            ) from exc
        return dataclasses.replace(reply, fallback_model=self.fallback_model, fallback_reason=first)


@dataclasses.dataclass(frozen=True)
class ConnectionCheck:
    ok: bool
    text: str


def check_connection(provider: Provider, model: str) -> ConnectionCheck:
    """One real call to `provider`, without retries: what it answered, or the exact error."""
    started = time.perf_counter()
    try:
        client = build_client(provider, max_retries=0)
    except (KeyMissing, KeyUnreadable) as exc:
        return ConnectionCheck(False, str(exc))
    try:
        reply = client.complete(
            model=model,
            messages=[{"role": "user", "content": "Answer with the one word: pong"}],
            tools=[],
            temperature=0,
        )
    except ModelError as exc:
        return ConnectionCheck(False, str(exc))
    finally:
        client.close()
    elapsed = (time.perf_counter() - started) * 1000
    answer = " ".join((reply.content or "").split())[:200] or "(an empty answer)"
    usage = "estimated" if reply.usage_estimated else "reported"
    return ConnectionCheck(
        True,
        f"{reply.model} answered in {elapsed:.0f} ms: {answer!r} "
        f"({reply.input_tokens} + {reply.output_tokens} tokens, usage {usage})",
    )


# --- editing -----------------------------------------------------------------------------


def may_manage_providers(user) -> bool:
    """Providers serve every project: staff, and the admins of any project, manage them."""
    if not user.is_authenticated:
        return False
    if user.is_superuser or user.is_staff:
        return True
    return Membership.objects.filter(user=user, role=Membership.Role.ADMIN).exists()


def save_provider(user, provider: Provider, *, api_key: str = "", clear_key: bool = False):
    """Save `provider` as edited by `user`; a new `api_key` is stored encrypted, and replaces
    any environment variable name (one source of truth for the key)."""
    if not may_manage_providers(user):
        raise PermissionError("Only a project admin may change model providers.")
    if clear_key:
        provider.api_key_encrypted = ""
    if api_key:
        provider.api_key_encrypted = encrypt(api_key)
        provider.api_key_env = ""
    provider.save()
    log.info("provider %s saved by %s", provider.name, user)
    return provider
