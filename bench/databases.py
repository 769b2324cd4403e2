"""PostgreSQL databases for the benchmarks, made through the server's `postgres` database."""

from urllib.parse import urlsplit, urlunsplit


def create_database(url: str, *, fresh: bool) -> None:
    """Create the database `url` names; with `fresh`, drop it first (a clean slate), else keep
    one that exists (seeded data reused)."""
    import psycopg

    name = urlsplit(url).path.lstrip("/")
    admin_url = urlunsplit(urlsplit(url)._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if fresh:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')
