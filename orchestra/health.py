"""Health of the database, the broker, the workers and the command sandbox, for /healthz."""

from django.conf import settings
from django.db import connection

from agents.sandbox import sandbox_status


def health_report() -> dict:
    report: dict = {
        "database": _database(),
        "broker": _broker(),
        "worker": _workers(),
        "sandbox": _sandbox(),
    }
    report["ok"] = all(part["ok"] for part in report.values())
    return report


def _database() -> dict:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return {"ok": True, "engine": connection.vendor}
    except Exception as exc:
        return {"ok": False, "error": str(exc)}


def _broker() -> dict:
    if settings.ORCHESTRA_EMBEDDED_WORKER:
        return {"ok": True, "kind": "embedded"}
    try:
        import redis

        redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2).ping()
        return {"ok": True, "kind": "redis"}
    except Exception as exc:
        return {"ok": False, "kind": "redis", "error": str(exc)}


def _workers() -> dict:
    if settings.ORCHESTRA_EMBEDDED_WORKER:
        return {"ok": True, "kind": "embedded", "count": 1}
    from orchestra.celery import app

    try:
        replies = app.control.ping(timeout=0.5) or []
    except Exception as exc:
        return {"ok": False, "count": 0, "error": str(exc)}
    names = sorted(name for reply in replies for name in reply)
    return {"ok": bool(names), "count": len(names), "workers": names}


def _sandbox() -> dict:
    """Which sandbox this process runs commands in. No sandbox is healthy when chosen (or when
    "auto" found none: commands then wait for a person); a required one that cannot run is
    not, since no command can run at all."""
    status = sandbox_status()
    return {"ok": status["confined"] or not status["required"], **status}
