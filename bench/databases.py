"""The databases a benchmark uses: only its own, created for it and dropped by it.

Benchmarks often run on a server others use too (a developer's, CI's). So a benchmark never
takes a database by a fixed name: `BenchDatabases.create` makes a new one under a unique name
(prefix, process id, random suffix; CREATE fails rather than reuse one that exists), and
`drop_all` drops exactly those it created, nothing else. Redis has no names, only numbered
databases: `RedisDatabase` checks that its number is empty before the benchmark uses it and,
at the end, deletes only the keys that appeared during the benchmark under the prefixes the
stack writes (Celery's queues and bindings, the channel layer's), never FLUSHDB.
"""

from __future__ import annotations

import os
import secrets
from urllib.parse import urlsplit, urlunsplit

DEFAULT_SERVER = "postgres://postgres@127.0.0.1:5432/postgres"


def admin_url(url: str) -> str:
    """The server's `postgres` database, through which databases are created and dropped."""
    return urlunsplit(urlsplit(url)._replace(path="/postgres"))


def database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


class BenchDatabases:
    """PostgreSQL databases this benchmark created; `drop_all` drops those and only those."""

    def __init__(self, server_url: str = DEFAULT_SERVER, prefix: str = "orchestra_bench"):
        self.server_url = server_url
        self.prefix = prefix
        self.created: list[str] = []

    def create(self, label: str) -> str:
        """A new, empty database; returns its URL."""
        import psycopg

        name = f"{self.prefix}_{label}_{os.getpid()}_{secrets.token_hex(3)}"
        with psycopg.connect(admin_url(self.server_url), autocommit=True) as conn:
            # No IF NOT EXISTS: an existing database of that name is someone else's.
            conn.execute(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return urlunsplit(urlsplit(self.server_url)._replace(path="/" + name))

    def drop_all(self) -> None:
        """Drop the databases this object created (their connections are this benchmark's)."""
        import psycopg

        with psycopg.connect(admin_url(self.server_url), autocommit=True) as conn:
            while self.created:
                name = self.created.pop()
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def __enter__(self) -> BenchDatabases:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.drop_all()


def ensure_database(url: str) -> bool:
    """Create the database `url` names when it is missing; never drop one. True if created.
    For a benchmark that keeps a large seeded history between runs (bench/pages.py)."""
    import psycopg

    name = database_name(url)
    with psycopg.connect(admin_url(url), autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            return False
        conn.execute(f'CREATE DATABASE "{name}"')
        return True


# What an Orchestra stack writes to Redis: Celery's queues, bindings and unacked sets, the
# channel layer's groups and channels.
STACK_KEY_PATTERNS = ("_kombu.*", "celery*", "unacked*", "orchestra*", "asgi*", "*.reply.celery*")


class RedisNotEmpty(RuntimeError):
    pass


class RedisDatabase:
    """A numbered Redis database that must be empty before the benchmark uses it."""

    def __init__(self, url: str):
        import redis

        self.url = url
        self.client = redis.Redis.from_url(url)

    def claim(self) -> None:
        size = self.client.dbsize()
        if size:
            raise RedisNotEmpty(
                f"Redis database {self.url} holds {size} keys: someone uses it. Pick an empty "
                "one with --redis redis://127.0.0.1:6379/N (nothing is flushed)."
            )

    def release(self) -> int:
        """Delete the keys the stack wrote (the database was empty when claimed); how many."""
        deleted = 0
        for pattern in STACK_KEY_PATTERNS:
            keys = list(self.client.scan_iter(match=pattern, count=500))
            if keys:
                deleted += self.client.delete(*keys)
        self.client.close()
        return deleted
