"""Shared fixtures: named personas, the seeded demo project, and engine settings that keep
unit tests in process (tasks drained in the calling thread, demo model without latency)."""

import threading

import pytest
from django.contrib.auth import get_user_model

from agents.llm import reset_clients
from orchestra.engine import start_run
from orchestra.models import Membership, Project
from orchestra.seed import seed_demo


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix, tmp_path_factory):
    """On SQLite the tests' database is a file, like the embedded default's. Django's test
    database would be in memory, shared between threads through SQLite's shared cache, whose
    table locks fail at once ("database table is locked") where a file's locks wait
    (busy timeout, WAL): the embedded worker's threads could not write beside each other."""
    from django.conf import settings

    database = settings.DATABASES["default"]
    if database["ENGINE"] == "orchestra.sqlite":
        # One folder per process (xdist worker), so parallel processes never share a file.
        folder = tmp_path_factory.mktemp("database")
        database.setdefault("TEST", {})["NAME"] = str(folder / "orchestra-test.sqlite3")


@pytest.fixture
def own_embedded_pool(monkeypatch):
    """`orchestra up` stops the embedded pool for good once it stops serving: a test that runs
    it in process stops a pool of its own, not the one the process's other tests use."""
    from orchestra import queue

    monkeypatch.setattr(queue, "_stop", threading.Event())
    monkeypatch.setattr(queue, "_beat_stop", threading.Event())
    monkeypatch.setattr(queue, "_pool", None)
    monkeypatch.setattr(queue, "_unfinished", 0)


@pytest.fixture(autouse=True)
def engine_settings(settings, tmp_path):
    # Personas are made for every test: the production hasher would dominate the suite.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.ORCHESTRA_EMBEDDED_WORKER = "sync"
    settings.ORCHESTRA_DEMO_LATENCY = 0
    settings.ORCHESTRA_USE_DEMO_MODEL = True
    settings.ORCHESTRA_WORKSPACES = tmp_path / "workspaces"
    reset_clients()
    yield settings
    reset_clients()


def _user(username: str, **extra):
    return get_user_model().objects.create_user(
        username, f"{username}@example.test", "pw-" + username, **extra
    )


@pytest.fixture
def demo(db) -> Project:
    seed_demo()
    return Project.objects.get(slug="demo")


@pytest.fixture
def owner(demo):
    user = _user("olivia")
    Membership.objects.create(project=demo, user=user, role=Membership.Role.ADMIN)
    return user


@pytest.fixture
def demo_run(demo, owner):
    """A run of the demo project, started (the sync worker carries it as far as it goes) and
    read again."""
    run = start_run(owner, demo, "A demo run")
    run.refresh_from_db()
    return run


@pytest.fixture
def operator(demo):
    user = _user("oscar")
    Membership.objects.create(project=demo, user=user, role=Membership.Role.OPERATOR)
    return user


@pytest.fixture
def approver(demo):
    user = _user("ada")
    Membership.objects.create(project=demo, user=user, role=Membership.Role.APPROVER)
    return user


@pytest.fixture
def second_approver(demo):
    user = _user("grace")
    Membership.objects.create(project=demo, user=user, role=Membership.Role.APPROVER)
    return user


@pytest.fixture
def viewer(demo):
    user = _user("vera")
    Membership.objects.create(project=demo, user=user, role=Membership.Role.VIEWER)
    return user


@pytest.fixture
def outsider(db):
    return _user("mallory")
