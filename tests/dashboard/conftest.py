"""Dashboard fixtures: a demo run driven by the in-process engine to its first checkpoint.

The engine drains its queue in the calling thread once a transaction commits
(tests/conftest.py), hence transactional databases: `start_run` returns with the run already
waiting for a human at the `verify` step's command.
"""

import pytest
from django.test import Client

from approvals.models import Checkpoint
from orchestra.engine import start_run
from orchestra.models import Run


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def waiting_run(demo, owner) -> Run:
    """A demo run paused at its first checkpoint (the `verify` step's `run_command`)."""
    run = start_run(owner, demo, "Add a greeting", "Say hello politely.")
    run.refresh_from_db()
    assert run.status == Run.Status.AWAITING_APPROVAL, run.error
    return run


@pytest.fixture
def checkpoint(waiting_run) -> Checkpoint:
    return waiting_run.checkpoints.get(status=Checkpoint.Status.PENDING)
