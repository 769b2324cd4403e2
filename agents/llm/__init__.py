"""Which model client an agent talks to: the demo model, or an OpenAI-compatible endpoint."""

import threading
from contextlib import contextmanager

from django.conf import settings

from agents.llm.base import ModelClient, ModelError, ModelReply, ToolRequest
from agents.models import AgentProfile

__all__ = ["ModelClient", "ModelError", "ModelReply", "ToolRequest", "client_for", "model_for"]

_override: ModelClient | None = None
_shared: ModelClient | None = None
_lock = threading.Lock()


def uses_demo_model() -> bool:
    return _override is None and settings.ORCHESTRA_USE_DEMO_MODEL


def model_for(profile: AgentProfile) -> str:
    if uses_demo_model():
        return "demo"
    return (
        profile.model
        or settings.ORCHESTRA_MODEL_OVERRIDES.get(profile.role)
        or settings.ORCHESTRA_MODEL
    )


def client_for(profile: AgentProfile) -> ModelClient:
    """The client for `profile`'s calls: its provider's (the environment's default when it
    names none), behind its fallback when it names one. One shared client per provider."""
    if _override is not None:
        return _override
    if settings.ORCHESTRA_USE_DEMO_MODEL:
        return default_client()
    # Imported here, like the SDK client below: a demo process never loads `openai`.
    from agents.llm import providers

    primary = providers.client_of(profile.provider) if profile.provider_id else default_client()
    if not (profile.fallback_model or profile.fallback_provider_id):
        return primary
    fallback = primary
    if profile.fallback_provider_id:
        fallback = providers.client_of(profile.fallback_provider)
    return providers.FallbackClient(primary, fallback, profile.fallback_model or model_for(profile))


def default_client() -> ModelClient:
    """The process's client from the environment (OPENAI_BASE_URL, OPENAI_API_KEY...), or the
    demo model; one shared instance."""
    global _shared
    with _lock:
        if _shared is None:
            if settings.ORCHESTRA_USE_DEMO_MODEL:
                from agents.llm.demo import DemoModel

                _shared = DemoModel(latency=settings.ORCHESTRA_DEMO_LATENCY)
            else:
                from agents.llm.openai_client import OpenAIModelClient

                _shared = OpenAIModelClient(
                    settings.OPENAI_BASE_URL or None,
                    settings.OPENAI_API_KEY or None,
                    timeout=settings.ORCHESTRA_MODEL_TIMEOUT,
                    max_retries=settings.ORCHESTRA_MODEL_MAX_RETRIES,
                    stream=settings.ORCHESTRA_MODEL_STREAM,
                )
        return _shared


def reset_clients() -> None:
    """Forget the shared clients (settings or providers changed)."""
    global _shared
    with _lock:
        _shared = None
    from agents.llm import providers

    providers.forget_clients()


@contextmanager
def override_client(client: ModelClient):
    """Engine tests script the model in process; the adapter itself is tested over HTTP."""
    global _override
    previous, _override = _override, client
    try:
        yield client
    finally:
        _override = previous
