"""The `orchestra` command, called in process through `main([...])` with stdout captured.

`up`, `web`, `worker` and `beat` start long-lived servers; the embedded end-to-end test runs
`up` for real, so here they are only checked up to the point where they would serve.
"""

import pytest
from django.test import Client

from approvals.models import Checkpoint
from orchestra import cli
from orchestra.engine import cancel_run, decide_checkpoint
from orchestra.models import ApiToken, Run

pytestmark = pytest.mark.django_db(transaction=True)


def test_token_prints_the_token_last_and_it_authenticates(demo, capsys):
    assert cli.main(["token", "admin"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    raw = lines[-1]
    assert raw.startswith("orc_")
    assert len(lines) > 1  # an explanation first, the token alone on the last line
    assert ApiToken.objects.get(digest=ApiToken.digest_of(raw)).user.username == "admin"
    response = Client(HTTP_AUTHORIZATION=f"Bearer {raw}").get("/api/projects")
    assert response.status_code == 200
    assert response.json()["projects"][0]["slug"] == "demo"


def test_token_for_an_unknown_user_fails_clearly(db, capsys):
    assert cli.main(["token", "nobody"]) == 2
    assert "no active user 'nobody'" in capsys.readouterr().err


def test_run_starts_a_run_as_the_user(demo, capsys):
    assert cli.main(["run", "demo", "x", "--description", "from the shell"]) == 0
    run = Run.objects.get()
    assert f"Run {run.pk} started" in capsys.readouterr().out
    assert run.task.title == "x" and run.task.description == "from the shell"
    assert run.task.created_by.username == "admin"
    # The test engine drains in this thread: the run already waits for a human.
    assert run.status == Run.Status.AWAITING_APPROVAL


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "nope", "x"], "no project 'nope' that admin can see"),
        (["run", "demo", " "], "A task needs a title."),
        (["run", "demo", "x", "--user", "vera"], "You may not create tasks in this project."),
        (["run", "demo", "x", "--user", "ghost"], "no active user 'ghost'"),
    ],
)
def test_run_refusals_are_one_line_errors(demo, viewer, capsys, argv, message):
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err
    assert not Run.objects.exists()


def test_run_wait_follows_events_through_approvals_to_completion(
    demo, approver, monkeypatch, capsys
):
    def approve_pending() -> None:  # stands in for a human in the dashboard between polls
        for checkpoint in Checkpoint.objects.filter(status=Checkpoint.Status.PENDING):
            decide_checkpoint(approver, checkpoint, "approve", "ok")

    monkeypatch.setattr(cli, "_wait", approve_pending)
    assert cli.main(["run", "demo", "Greet", "--wait"]) == 0
    out = capsys.readouterr().out
    run = Run.objects.get()
    assert run.status == Run.Status.COMPLETED
    exec_checkpoint, deploy_checkpoint = Checkpoint.objects.filter(run=run).order_by("pk")
    assert f"awaiting approval: checkpoint {exec_checkpoint.pk} (tool run_command " in out
    assert f"awaiting approval: checkpoint {deploy_checkpoint.pk} (tool deploy " in out
    assert "run.created" in out and "approval.decided" in out and "run.completed" in out
    assert out.index("run.created") < out.index("run.completed")
    assert run.report in out


def test_run_wait_exits_1_when_the_run_is_cancelled(demo, owner, monkeypatch, capsys):
    monkeypatch.setattr(cli, "_wait", lambda: cancel_run(owner, Run.objects.get()))
    assert cli.main(["run", "demo", "Doomed", "--wait"]) == 1
    out = capsys.readouterr().out
    assert "run.cancelled" in out
    assert out.strip().splitlines()[-1].endswith("cancelled.")


def test_worker_and_beat_refuse_without_a_broker(db, settings, capsys):
    settings.REDIS_URL = ""
    assert cli.main(["worker"]) == 2
    assert "REDIS_URL is not set" in capsys.readouterr().err
    assert cli.main(["beat"]) == 2
    assert "REDIS_URL is not set" in capsys.readouterr().err


def test_seed_is_idempotent_and_says_the_admin_exists(demo, capsys):
    assert cli.main(["seed"]) == 0
    assert "Admin user: admin (already exists" in capsys.readouterr().out


def test_seed_prints_a_generated_password_once(db, settings, capsys):
    settings.ORCHESTRA_ADMIN_PASSWORD = ""
    assert cli.main(["seed"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("Admin user: admin / password: ")
    password = line.rsplit(" ", 1)[-1]
    assert Client().login(username="admin", password=password)


def test_up_migrates_seeds_and_serves_on_the_given_port(db, settings, monkeypatch, capsys):
    served = {}

    def serve(host: str, port: int, **options) -> int:
        served.update(options, at=(host, port))
        return 0

    monkeypatch.setattr(cli, "_serve", serve)
    settings.ORCHESTRA_ADMIN_PASSWORD = "s3cret-enough"
    assert cli.main(["up", "--port", "9123"]) == 0
    out = capsys.readouterr().out
    assert "Admin user: admin / password: the value of ORCHESTRA_ADMIN_PASSWORD" in out
    assert "http://127.0.0.1:9123/" in out
    assert "demo model" in out
    assert served == {"at": ("127.0.0.1", 9123), "static": True, "access_log": False}


def test_up_refuses_a_public_address_with_the_development_key(db, monkeypatch, capsys):
    served = []
    monkeypatch.setattr(cli, "_serve", lambda *args, **options: served.append(args) or 0)
    assert cli.main(["up", "--host", "0.0.0.0", "--port", "9124"]) != 0
    assert "DJANGO_SECRET_KEY" in capsys.readouterr().err
    assert served == []


def test_no_subcommand_prints_help(capsys):
    assert cli.main([]) == 2
    assert "usage: orchestra" in capsys.readouterr().out


def test_run_in_the_embedded_default_does_its_work_before_exiting(demo, settings, capsys):
    # A thread pool in a process about to exit would drop the queued work; the CLI drives the
    # run itself instead, so it is waiting for a human (not stranded) when main() returns.
    settings.ORCHESTRA_EMBEDDED_WORKER = "thread"
    assert cli.main(["run", "demo", "x"]) == 0
    assert "Embedded mode" in capsys.readouterr().out
    assert Run.objects.get().status == Run.Status.AWAITING_APPROVAL
