"""Orchestra settings: every knob comes from an environment variable with a safe local default.

Nothing set means the embedded default: SQLite, an in-process channel layer, an in-process
worker and the demo model. DATABASE_URL, REDIS_URL and OPENAI_* switch to the configured
deployment. `.env.example` lists every variable.
"""

import os
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use 1/0, true/false, yes/no)")


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer") from None


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number") from None


DATA_DIR = Path(env_str("ORCHESTRA_DATA_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = [h for h in env_str("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost").split(",") if h]
CSRF_TRUSTED_ORIGINS = [o for o in env_str("DJANGO_CSRF_TRUSTED_ORIGINS", "").split(",") if o]

# A site that answers only to loopback names is someone's own machine (`make up`, the tests);
# any other name is a deployment, and a deployment must bring its own key: the development
# key and the .env.example placeholder are public.
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "[::1]", ".localhost"}
DEVELOPMENT_SECRET_KEY = "django-insecure-orchestra-local-development-only"
SECRET_KEY = env_str("DJANGO_SECRET_KEY")
if SECRET_KEY in ("", "change-me", DEVELOPMENT_SECRET_KEY):
    if not DEBUG and not set(ALLOWED_HOSTS) <= LOCAL_HOSTS:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY must be set to a long random value when the site serves "
            f"{', '.join(ALLOWED_HOSTS)} (generate one with: python -c 'from "
            "django.core.management.utils import get_random_secret_key as k; print(k())')"
        )
    SECRET_KEY = DEVELOPMENT_SECRET_KEY

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "django_htmx",
    # As an app, django-ninja serves the API docs from its own static files (Swagger UI and a
    # script file) instead of a CDN and an inline script, which the CSP would block.
    "ninja",
    "csp",
    "axes",
    # Named partials ({% partialdef %}): one per htmx target on the dashboard pages.
    "template_partials",
    "orchestra",
    "orchestra.dashboard",
    "agents",
    "approvals",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last of those that act, as django-axes asks: it turns a locked-out login into its
    # refusal.
    "axes.middleware.AxesMiddleware",
    # Does nothing to a request; makes Django run the chain above in one thread a request
    # under ASGI (see its docstring).
    "orchestra.middleware.OneThreadChain",
]

ROOT_URLCONF = "orchestra.urls"
ASGI_APPLICATION = "orchestra.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
DATABASE_URL = env_str("DATABASE_URL")


def _process_role() -> str:
    """The `orchestra` subcommand this process serves: up, web, worker or beat, else other."""
    import sys

    words = [arg for arg in sys.argv[1:] if not arg.startswith("-")]
    program = Path(sys.argv[0]).name if sys.argv else ""
    # `orchestra ...`, or `python -m orchestra.cli ...` (the package's __main__.py).
    serving = words and words[0] in {"up", "web", "worker", "beat"}
    if program in {"orchestra", "__main__.py"} and serving:
        return words[0]
    return "other"


ORCHESTRA_PROCESS_ROLE = _process_role()
if DATABASE_URL:
    # Bounded connections (measured by bench/connections.py and
    # tests/integration/test_connections.py). Under ASGI each request runs its sync code on a
    # thread of its own, so a connection per thread means one per concurrent request: 50 at
    # once with CONN_MAX_AGE=0, more with persistent connections, which outlive their request's
    # thread until garbage collection. A pool (psycopg-pool, Django's OPTIONS["pool"]) caps
    # each process at ORCHESTRA_DB_POOL_MAX: a request borrows a connection for its database
    # work and waits up to ORCHESTRA_DB_POOL_TIMEOUT seconds when all are lent. Workers hold
    # one connection per running task plus one for the process's lease keeper, so a worker's
    # pool is sized from its thread count, and Celery's close at task end hands it back, to be
    # reused by the next task instead of reconnecting. ORCHESTRA_DB_POOL=0 turns the pool off (then
    # DATABASE_CONN_MAX_AGE applies; keep it 0 under ASGI). Each process names itself in
    # pg_stat_activity.application_name: orchestra-web, orchestra-worker, ...
    DB_POOL = env_bool("ORCHESTRA_DB_POOL", True)
    DB_POOL_MAX = env_int("ORCHESTRA_DB_POOL_MAX", 10)
    # Same default as ORCHESTRA_WORKER_CONCURRENCY / ORCHESTRA_EMBEDDED_THREADS below.
    if ORCHESTRA_PROCESS_ROLE == "worker":
        DB_POOL_MAX = env_int(
            "ORCHESTRA_DB_WORKER_POOL_MAX", env_int("ORCHESTRA_WORKER_CONCURRENCY", 64) + 2
        )
    elif ORCHESTRA_PROCESS_ROLE == "up":  # serves and, embedded, works
        DB_POOL_MAX += env_int("ORCHESTRA_EMBEDDED_THREADS", 32) + 1
    DB_POOL_MIN = min(env_int("ORCHESTRA_DB_POOL_MIN", 2), DB_POOL_MAX)
    DB_POOL_TIMEOUT = env_float("ORCHESTRA_DB_POOL_TIMEOUT", 30.0)
    DATABASE_CONN_MAX_AGE = env_int("DATABASE_CONN_MAX_AGE", 0)
    if DB_POOL and (DB_POOL_MAX < 1 or DB_POOL_TIMEOUT <= 0):
        raise ImproperlyConfigured(
            "ORCHESTRA_DB_POOL_MAX must be at least 1 and ORCHESTRA_DB_POOL_TIMEOUT positive"
        )
    if DB_POOL and DATABASE_CONN_MAX_AGE:
        raise ImproperlyConfigured(
            "DATABASE_CONN_MAX_AGE must be 0 with the connection pool (ORCHESTRA_DB_POOL=0 "
            "turns the pool off)"
        )
    DATABASES = {
        "default": dj_database_url.parse(
            DATABASE_URL,
            conn_max_age=DATABASE_CONN_MAX_AGE,
            conn_health_checks=True,
        )
    }
    DATABASES["default"].setdefault("OPTIONS", {})
    DATABASES["default"]["OPTIONS"]["application_name"] = f"orchestra-{ORCHESTRA_PROCESS_ROLE}"
    # Values travel beside the statement instead of being written into it by the client, and
    # a statement sent five times on a connection is prepared by the server once (the engine
    # sends the same few dozen at every step): 6% less interpreter time per step, measured.
    # Django turns psycopg's preparing off unless `prepare_threshold` is given: without it
    # the server parsed and planned every statement again (a 50-step chain: 1,267 statements,
    # 863 ms of its time; prepared, the 752 sent most often took 286 ms).
    # ORCHESTRA_DB_SERVER_BINDING=0 behind a pooler that cannot keep prepared statements
    # (PgBouncer before 1.21 in transaction mode).
    if env_bool("ORCHESTRA_DB_SERVER_BINDING", True):
        DATABASES["default"]["OPTIONS"]["server_side_binding"] = True
        DATABASES["default"]["OPTIONS"]["prepare_threshold"] = 5
    if DB_POOL:
        DATABASES["default"]["OPTIONS"]["pool"] = {
            "min_size": DB_POOL_MIN,
            "max_size": DB_POOL_MAX,
            "timeout": DB_POOL_TIMEOUT,
            # Idle connections above min_size go back to the server after a minute (psycopg's
            # default is ten): the server is often shared.
            "max_idle": 60.0,
        }
else:
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "orchestra.sqlite",
            "NAME": env_str("ORCHESTRA_SQLITE_PATH", str(DATA_DIR / "orchestra.sqlite3")),
            # A thread keeps its connection (a file handle) from one task or request to the
            # next: opening one, with its pragmas and functions, was 0.4 ms a task.
            "CONN_MAX_AGE": None,
            "OPTIONS": {
                # WAL lets readers work beside the writer; IMMEDIATE takes the write lock at
                # BEGIN so two threads never deadlock upgrading a read lock.
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                "transaction_mode": "IMMEDIATE",
                "timeout": 30,
            },
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"

# --- Security ------------------------------------------------------------------------------
# Off by default so `make up` works over plain http://127.0.0.1; a deployment behind TLS turns
# them on (the production block of .env.example; `manage.py check --deploy` is then clean).
SESSION_COOKIE_SECURE = env_bool("DJANGO_SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = env_bool("DJANGO_CSRF_COOKIE_SECURE", False)
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", False)
# The load balancer's health check may come over plain HTTP.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", False)


def env_proxy_header(name: str) -> tuple[str, str] | None:
    """`X-Forwarded-Proto: https` (the header the TLS proxy sets, and its value for HTTPS) as
    Django's SECURE_PROXY_SSL_HEADER. Only set it when a proxy always sets or strips that
    header: otherwise a client could claim HTTPS itself."""
    raw = env_str(name).strip()
    if not raw:
        return None
    header, colon, value = raw.partition(":")
    if not colon or not header.strip() or not value.strip():
        raise ImproperlyConfigured(f"{name}={raw!r} should read 'Header-Name: value'")
    return "HTTP_" + header.strip().upper().replace("-", "_"), value.strip()


SECURE_PROXY_SSL_HEADER = env_proxy_header("ORCHESTRA_PROXY_SSL_HEADER")

# Content-Security-Policy: scripts and styles come only from this site (vendored, no CDN) and
# no inline script runs. Styles allow 'unsafe-inline' because templates position bars with
# computed style attributes (the trace waterfall) and htmx and the API docs' Swagger UI add
# inline styles; a style cannot run code. WebSockets are same-origin ('self').
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "font-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

# Failed-login throttling (django-axes) on the dashboard and admin sign-in forms: after
# ORCHESTRA_LOGIN_FAILURE_LIMIT failures for one username from one address, that pair is
# refused (429) for ORCHESTRA_LOGIN_COOLOFF_MINUTES, even with the right password. Keyed on
# the pair so nobody can lock a colleague out from elsewhere. API bearer tokens never go
# through a password and are unaffected.
AUTHENTICATION_BACKENDS = [
    "orchestra.throttle.LoginThrottle",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("ORCHESTRA_LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_float("ORCHESTRA_LOGIN_COOLOFF_MINUTES", 15.0))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
# Successful sign-ins are not logged by axes: the audit trail has what matters.
AXES_DISABLE_ACCESS_LOG = True

# An open run-event WebSocket asks again, at most this many seconds apart, whether its user
# may still see the run (membership, token, active account); it closes when not.
ORCHESTRA_SOCKET_RECHECK = env_float("ORCHESTRA_SOCKET_RECHECK", 5.0)

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "staticfiles"

# --- Broker, channel layer, worker ----------------------------------------------------------
REDIS_URL = env_str("REDIS_URL")
# With no broker configured the engine runs its tasks on a thread pool inside the web
# process ("thread"); tests may pick "sync", which drains the queue in the calling thread.
ORCHESTRA_EMBEDDED_WORKER = env_str("ORCHESTRA_EMBEDDED_WORKER", "" if REDIS_URL else "thread")
if ORCHESTRA_EMBEDDED_WORKER not in {"", "thread", "sync"}:
    raise ImproperlyConfigured("ORCHESTRA_EMBEDDED_WORKER must be empty, 'thread' or 'sync'")
ORCHESTRA_EMBEDDED_THREADS = env_int("ORCHESTRA_EMBEDDED_THREADS", 32)
# Seconds a stopping `orchestra up` gives the engine's running tasks to end; what is still
# running then is taken over at the next start.
ORCHESTRA_STOP_GRACE = env_float("ORCHESTRA_STOP_GRACE", 10)
# How many of a process's threads do engine work at once (orchestra/slots.py); the others wait
# on their models. Default four per core; 0: no limit.
_CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
ORCHESTRA_ENGINE_SLOTS = env_int("ORCHESTRA_ENGINE_SLOTS", 4 * _CORES)

# Durable work (planning, a step, its review, its merge, the report) is held under a lease
# its worker's heartbeat renews every third of it; past it, the sweep (every
# ORCHESTRA_SWEEP_INTERVAL seconds) hands the work to another worker. A killed worker's work
# carries on within lease + interval; work that kills every worker that takes it ends the run
# after ORCHESTRA_ACTIVITY_ATTEMPTS tries.
ORCHESTRA_LEASE = env_float("ORCHESTRA_LEASE", 30.0)
ORCHESTRA_SWEEP_INTERVAL = env_float("ORCHESTRA_SWEEP_INTERVAL", 10.0)
ORCHESTRA_ACTIVITY_ATTEMPTS = env_int("ORCHESTRA_ACTIVITY_ATTEMPTS", 5)
if ORCHESTRA_LEASE <= 0 or ORCHESTRA_SWEEP_INTERVAL <= 0 or ORCHESTRA_ACTIVITY_ATTEMPTS < 1:
    raise ImproperlyConfigured(
        "ORCHESTRA_LEASE and ORCHESTRA_SWEEP_INTERVAL must be positive, "
        "ORCHESTRA_ACTIVITY_ATTEMPTS at least 1"
    )
CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# A worker takes a message only when a slot of its pool is free: one busy with a step does not
# hold the next step back from an idle worker (Redis brokers; others ignore it).
CELERY_WORKER_DISABLE_PREFETCH = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_TIME_LIMIT = env_int("ORCHESTRA_TASK_TIME_LIMIT", 1800)
CELERY_TASK_SOFT_TIME_LIMIT = CELERY_TASK_TIME_LIMIT - 30
# No ack emulation on Redis: the database, not the broker, knows what work is due (a queued
# activity past its lease is sent again), and kombu's restore of "unacked" messages is what
# can leave a worker deaf after Redis restarts (its reconnect fails restoring them).
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": CELERY_TASK_TIME_LIMIT + 60,
    "ack_emulation": False,
}
CELERY_BEAT_SCHEDULE = {
    "sweep-active-runs": {"task": "orchestra.sweep", "schedule": ORCHESTRA_SWEEP_INTERVAL},
    "approvals.deliver_due": {"task": "approvals.deliver_due", "schedule": 10.0},
    "approvals.expire_due": {"task": "approvals.expire_due", "schedule": 15.0},
    # Each project's retention settings; idempotent, so hourly is only how soon after a run
    # passes its limit it goes.
    "orchestra.apply_retention": {"task": "orchestra.apply_retention", "schedule": 3600.0},
}
# Queues: engine work that needs the central repository (planning, merges, the report, the
# periodic chores) goes to `orchestra`; step work (an attempt, its review) to `steps`, or to
# a queue named after the step's agent role when the role is listed here (e.g.
# "coder,reviewer"), so a worker can serve only some roles (`orchestra worker --queues`).
ORCHESTRA_ROLE_QUEUES = [
    role.strip() for role in env_str("ORCHESTRA_ROLE_QUEUES").split(",") if role.strip()
]
if {"orchestra", "steps", "celery"} & set(ORCHESTRA_ROLE_QUEUES):
    raise ImproperlyConfigured("ORCHESTRA_ROLE_QUEUES cannot name orchestra, steps or celery")
CELERY_TASK_ROUTES = ("orchestra.queues.route",)
# LLM steps wait on the network: threads, with many slots per worker process.
ORCHESTRA_WORKER_POOL = env_str("ORCHESTRA_WORKER_POOL", "threads")
ORCHESTRA_WORKER_CONCURRENCY = env_int("ORCHESTRA_WORKER_CONCURRENCY", 64)
# `orchestra worker` runs this many Celery processes, the concurrency shared among them: the
# engine's own Python runs one thread at a time in a process, so one process left the other
# cores idle while a wide plan queued for its interpreter. One per core, at most four.
ORCHESTRA_WORKER_PROCESSES = env_int("ORCHESTRA_WORKER_PROCESSES", min(_CORES, 4))
if ORCHESTRA_WORKER_PROCESSES < 1:
    raise ImproperlyConfigured("ORCHESTRA_WORKER_PROCESSES must be at least 1")

if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                # redis-py 8 times sockets out after 5 s, the same as the layer's blocking
                # receive: without a longer timeout every idle consumer dies at 5 s.
                "hosts": [{"address": REDIS_URL, "socket_timeout": 30}],
                # Bursts beyond the default capacity (100) are dropped silently; consumers
                # also re-read gaps from the database by seq, so nothing is lost.
                "capacity": 5000,
                "expiry": 60,
            },
        }
    }
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels.layers.InMemoryChannelLayer",
            "CONFIG": {"capacity": 5000},
        }
    }

# --- Models -------------------------------------------------------------------------------
OPENAI_BASE_URL = env_str("OPENAI_BASE_URL")
OPENAI_API_KEY = env_str("OPENAI_API_KEY")
ORCHESTRA_MODEL = env_str("ORCHESTRA_MODEL", "gpt-4o-mini")
# Per-role overrides come from ORCHESTRA_MODEL_<ROLE> (e.g. ORCHESTRA_MODEL_CODER).
# The model client's own knobs share the prefix and are not roles.
_MODEL_KNOBS = {"ORCHESTRA_MODEL_TIMEOUT", "ORCHESTRA_MODEL_MAX_RETRIES", "ORCHESTRA_MODEL_STREAM"}
ORCHESTRA_MODEL_OVERRIDES = {
    key.removeprefix("ORCHESTRA_MODEL_").lower(): value
    for key, value in os.environ.items()
    if key.startswith("ORCHESTRA_MODEL_") and key not in _MODEL_KNOBS and value
}
ORCHESTRA_USE_DEMO_MODEL = env_bool(
    "ORCHESTRA_USE_DEMO_MODEL", not (OPENAI_BASE_URL or OPENAI_API_KEY)
)
ORCHESTRA_DEMO_LATENCY = env_float("ORCHESTRA_DEMO_LATENCY", 0.4)
ORCHESTRA_MODEL_TIMEOUT = env_float("ORCHESTRA_MODEL_TIMEOUT", 120.0)
ORCHESTRA_MODEL_MAX_RETRIES = env_int("ORCHESTRA_MODEL_MAX_RETRIES", 3)
ORCHESTRA_MODEL_STREAM = env_bool("ORCHESTRA_MODEL_STREAM", True)
# USD per million tokens: {"model": (input, output)}. ORCHESTRA_PRICES overrides with JSON.
ORCHESTRA_PRICES: dict[str, tuple[Decimal, Decimal]] = {
    "gpt-4o": (Decimal("2.50"), Decimal("10.00")),
    "gpt-4o-mini": (Decimal("0.15"), Decimal("0.60")),
    "gpt-4.1": (Decimal("2.00"), Decimal("8.00")),
    "gpt-4.1-mini": (Decimal("0.40"), Decimal("1.60")),
    "demo": (Decimal("0"), Decimal("0")),
}
if env_str("ORCHESTRA_PRICES"):
    import json

    try:
        ORCHESTRA_PRICES |= {
            name: (Decimal(str(pair[0])), Decimal(str(pair[1])))
            for name, pair in json.loads(env_str("ORCHESTRA_PRICES")).items()
        }
    except (ValueError, TypeError, IndexError) as exc:
        raise ImproperlyConfigured(f"ORCHESTRA_PRICES is not valid JSON prices: {exc}") from None

# --- Engine limits ------------------------------------------------------------------------
ORCHESTRA_MAX_PLAN_STEPS = env_int("ORCHESTRA_MAX_PLAN_STEPS", 40)
ORCHESTRA_MAX_PLAN_ATTEMPTS = env_int("ORCHESTRA_MAX_PLAN_ATTEMPTS", 3)
ORCHESTRA_MAX_TEXT = env_int("ORCHESTRA_MAX_TEXT", 20_000)
ORCHESTRA_TOOL_OUTPUT_LIMIT = env_int("ORCHESTRA_TOOL_OUTPUT_LIMIT", 16_000)
ORCHESTRA_COMMAND_TIMEOUT = env_float("ORCHESTRA_COMMAND_TIMEOUT", 60.0)
# Seconds one search_text call may take, its regular expression included.
ORCHESTRA_SEARCH_TIMEOUT = env_float("ORCHESTRA_SEARCH_TIMEOUT", 2.0)
# --- Sandbox: where agents' commands run (agents/sandbox.py). "auto": bubblewrap when it
# works here, else none; "bwrap": bubblewrap or no command runs; "none": unconfined on the
# host, and the approval policy then sends every command to a person.
ORCHESTRA_SANDBOX = env_str("ORCHESTRA_SANDBOX", "auto").strip().lower() or "auto"
if ORCHESTRA_SANDBOX not in {"auto", "bwrap", "none"}:
    raise ImproperlyConfigured("ORCHESTRA_SANDBOX must be 'auto', 'bwrap' or 'none'")
# Network for every project's sandboxed commands; otherwise a project reaches it only when its
# `sandbox_network` is on.
ORCHESTRA_SANDBOX_NETWORK = env_bool("ORCHESTRA_SANDBOX_NETWORK", False)
# Extra folders commands may read (absolute, separated by os.pathsep), e.g. a toolchain.
ORCHESTRA_SANDBOX_READ_ONLY = [
    path for path in env_str("ORCHESTRA_SANDBOX_READ_ONLY").split(os.pathsep) if path
]
if not all(os.path.isabs(path) for path in ORCHESTRA_SANDBOX_READ_ONLY):
    raise ImproperlyConfigured("ORCHESTRA_SANDBOX_READ_ONLY takes absolute paths only")
# Per process in the sandbox; 0 = no limit. Memory is address space (some runtimes, e.g.
# Node or the JVM, reserve far more than they use).
ORCHESTRA_SANDBOX_CPU_SECONDS = env_int("ORCHESTRA_SANDBOX_CPU_SECONDS", 300)
ORCHESTRA_SANDBOX_MEMORY_MB = env_int("ORCHESTRA_SANDBOX_MEMORY_MB", 4096)
ORCHESTRA_SANDBOX_PROCESSES = env_int("ORCHESTRA_SANDBOX_PROCESSES", 256)
if min(ORCHESTRA_SANDBOX_CPU_SECONDS, ORCHESTRA_SANDBOX_MEMORY_MB, ORCHESTRA_SANDBOX_PROCESSES) < 0:
    raise ImproperlyConfigured("ORCHESTRA_SANDBOX_* limits must be 0 (no limit) or more")
# Bytes kept of each of a command's stdout and stderr (its start and end); the rest is cut.
ORCHESTRA_COMMAND_OUTPUT_LIMIT = env_int("ORCHESTRA_COMMAND_OUTPUT_LIMIT", 64_000)
ORCHESTRA_DEPLOY_TIMEOUT = env_float("ORCHESTRA_DEPLOY_TIMEOUT", 300.0)
# A project's deploy command runs in the sandbox too (writing only its releases); it reaches
# the network unless this is off, as most deploys push somewhere.
ORCHESTRA_DEPLOY_NETWORK = env_bool("ORCHESTRA_DEPLOY_NETWORK", True)
ORCHESTRA_WORKSPACES = Path(env_str("ORCHESTRA_WORKSPACES", str(DATA_DIR / "workspaces")))
# Worktrees of finished runs kept per repository (under its git directory), checked out, for
# later steps to take: a step then rewrites only the files that differ instead of checking
# the whole repository out. Each holds a checkout of the project; 0 deletes them instead. A
# project whose concurrency cap is larger keeps that many (`workspaces.parked_at_most`).
ORCHESTRA_PARKED_WORKTREES = env_int("ORCHESTRA_PARKED_WORKTREES", 32)
ORCHESTRA_ADMIN_PASSWORD = env_str("ORCHESTRA_ADMIN_PASSWORD")
# A worker on another machine (no shared disk): the central web process's git URL, e.g.
# http://central:8000/git, and this worker's credential (`orchestra worker-token add NAME`
# there). The worker then keeps its own clone of each project under ORCHESTRA_WORKSPACES,
# fetches before a step and pushes the step's branch after it. Unset: the repositories are
# here, on disk.
ORCHESTRA_GIT_REMOTE = env_str("ORCHESTRA_GIT_REMOTE").strip().rstrip("/")
ORCHESTRA_GIT_TOKEN = env_str("ORCHESTRA_GIT_TOKEN").strip()
if ORCHESTRA_GIT_REMOTE:
    from urllib.parse import urlsplit

    _remote = urlsplit(ORCHESTRA_GIT_REMOTE)
    if _remote.scheme not in ("http", "https") or not _remote.hostname:
        raise ImproperlyConfigured("ORCHESTRA_GIT_REMOTE must be an http(s) URL")
    if _remote.username or _remote.password:
        raise ImproperlyConfigured(
            "ORCHESTRA_GIT_REMOTE must not hold credentials: set ORCHESTRA_GIT_TOKEN instead"
        )
    if not ORCHESTRA_GIT_TOKEN:
        raise ImproperlyConfigured(
            "ORCHESTRA_GIT_REMOTE is set but ORCHESTRA_GIT_TOKEN is not (issue one on the "
            "central machine with `orchestra worker-token add NAME`)"
        )

# --- Notifications (checkpoint webhooks and emails) ----------------------------------------
# Where people reach the dashboard: links in notifications are absolute.
ORCHESTRA_BASE_URL = env_str("ORCHESTRA_BASE_URL", "http://127.0.0.1:8000")
ORCHESTRA_WEBHOOK_TIMEOUT = env_float("ORCHESTRA_WEBHOOK_TIMEOUT", 10.0)
# Attempts per delivery (webhook or email) before it is marked failed.
ORCHESTRA_WEBHOOK_MAX_ATTEMPTS = env_int("ORCHESTRA_WEBHOOK_MAX_ATTEMPTS", 6)
# Email goes out through SMTP once EMAIL_HOST is set; until then each message is written to
# a file under the data folder, so nothing is lost and no failing SMTP fills the trace.
EMAIL_HOST = env_str("EMAIL_HOST")
EMAIL_PORT = env_int("EMAIL_PORT", 587)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", True)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "orchestra@localhost")
if EMAIL_HOST:
    EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
else:
    EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
    EMAIL_FILE_PATH = str(DATA_DIR / "mail")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("ORCHESTRA_LOG_LEVEL", "WARNING")},
}
