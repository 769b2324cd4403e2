"""The `orchestra` command, called in process through `main([...])` with stdout captured.

`up`, `web`, `worker` and `beat` start long-lived servers; the embedded end-to-end test runs
`up` for real, so here they are only checked up to the point where they would serve.
"""

import pytest
from django.test import Client

from agents.models import AgentRun
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
    assert f"waiting for a person: checkpoint {exec_checkpoint.pk} — run_command " in out
    assert f"waiting for a person: checkpoint {deploy_checkpoint.pk} — deploy " in out
    assert "approval decided" in out and "run completed" in out
    assert out.index(f"Run {run.pk} started") < out.index("run completed")
    assert run.report in out


def test_run_wait_exits_1_when_the_run_is_cancelled(demo, owner, monkeypatch, capsys):
    monkeypatch.setattr(cli, "_wait", lambda: cancel_run(owner, Run.objects.get()))
    assert cli.main(["run", "demo", "Doomed", "--wait"]) == 1
    out = capsys.readouterr().out
    assert "run cancelled" in out
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


def test_up_migrates_seeds_and_serves_on_the_given_port(
    db, settings, monkeypatch, capsys, own_embedded_pool
):
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


def test_run_in_the_embedded_default_runs_parallel_steps_in_parallel(demo, settings, capsys):
    # The work runs on this process's pool, as in the server; main() returns only once the
    # run waits for a person (nothing stranded in a pool about to exit).
    settings.ORCHESTRA_EMBEDDED_WORKER = "thread"
    settings.ORCHESTRA_DEMO_LATENCY = 0.15
    assert cli.main(["run", "demo", "x"]) == 0
    out = capsys.readouterr().out
    assert "Embedded mode" in out
    run = Run.objects.get()
    assert run.status == Run.Status.AWAITING_APPROVAL
    assert not run.activities.exclude(status="done").exists()
    # implement and tests depend only on research: their first attempts overlapped in time.
    first = {
        a.step.key: a
        for a in AgentRun.objects.filter(run=run, purpose="step", attempt=1).select_related("step")
    }
    implement, tests = first["implement"], first["tests"]
    assert implement.started_at < tests.finished_at and tests.started_at < implement.finished_at
    assert "progress:" in out and "waiting for a person" in out


# --- following a run, and deciding from the terminal --------------------------------------------
def test_a_run_at_a_checkpoint_prints_the_url_and_command_and_approvals_approve_moves_it_on(
    demo, approver, monkeypatch, capsys
):
    decided = []

    def decide_from_the_terminal() -> None:  # a person in a second terminal, between polls
        pending = Checkpoint.objects.filter(status=Checkpoint.Status.PENDING).first()
        if pending is not None:
            assert cli.main(["approvals", "approve", str(pending.pk), "--user", "ada"]) == 0
            decided.append(pending.pk)

    monkeypatch.setattr(cli, "_wait", decide_from_the_terminal)
    assert cli.main(["run", "demo", "Greet", "--wait"]) == 0
    out = capsys.readouterr().out
    run = Run.objects.get()
    assert run.status == Run.Status.COMPLETED
    first, deploy = Checkpoint.objects.filter(run=run).order_by("pk")
    assert decided == [first.pk, deploy.pk]
    # One readable line per step change, then the progress.
    assert "▸ research     step started: attempt 1" in out
    assert "✓ research     step completed: after 1 attempt(s)" in out
    assert "↺ implement    step revising: round 1" in out
    assert "  progress: 3 of 5 steps done · 1 waiting for a person" in out
    assert "model.called" not in out and "model called" not in out  # calls stay in the trace
    assert len(out.splitlines()) < 80
    # At the checkpoint: what is asked, where and how to decide.
    assert f"waiting for a person: checkpoint {first.pk} — run_command in step verify" in out
    assert f"open    http://127.0.0.1:8000/approvals/{first.pk}/" in out
    assert f"or run  orchestra approvals approve {first.pk}" in out
    assert f"orchestra approvals reject {first.pk} --comment 'why'" in out
    # The decision came through the same service: recorded, who decided it.
    assert f"Checkpoint {first.pk} approved by ada." in out
    assert Checkpoint.objects.get(pk=first.pk).decided_by == approver


def test_approvals_list_show_and_decide_with_the_same_rules_as_the_api(
    demo, approver, viewer, outsider, capsys
):
    assert cli.main(["run", "demo", "Greet"]) == 0
    checkpoint = Checkpoint.objects.get(status=Checkpoint.Status.PENDING)
    capsys.readouterr()

    assert cli.main(["approvals"]) == 0  # the bare form lists the pending ones too
    assert f"{checkpoint.pk}  pending" in capsys.readouterr().out
    assert cli.main(["approvals", "list", "--user", "ada"]) == 0
    listed = capsys.readouterr().out
    assert f"{checkpoint.pk}  pending" in listed and "run_command in step verify" in listed
    assert cli.main(["approvals", "show", str(checkpoint.pk), "--user", "ada"]) == 0
    shown = capsys.readouterr().out
    assert "tool     run_command (risk exec)" in shown and '"command":' in shown
    assert f"page     http://127.0.0.1:8000/approvals/{checkpoint.pk}/" in shown

    # Refusals, one line each: unseen, not allowed, no reason, bad JSON, bad arguments.
    cases = [
        (["approve", str(checkpoint.pk), "--user", "mallory"], "no checkpoint"),
        (["approve", str(checkpoint.pk), "--user", "vera"], ""),
        (["reject", str(checkpoint.pk), "--user", "ada"], "say why you reject it"),
        (["edit", str(checkpoint.pk), "{nope", "--user", "ada"], "the arguments are not JSON"),
        (["edit", str(checkpoint.pk), '{"cmd": 1}', "--user", "ada"], ""),
    ]
    for argv, message in cases:
        assert cli.main(["approvals", *argv]) == 2, argv
        assert message in capsys.readouterr().err
    assert Checkpoint.objects.get(pk=checkpoint.pk).status == Checkpoint.Status.PENDING

    edited = '{"command": "python3 -m unittest discover -s tests"}'
    assert cli.main(["approvals", "edit", str(checkpoint.pk), edited, "--user", "ada"]) == 0
    checkpoint.refresh_from_db()
    assert (checkpoint.status, checkpoint.decision) == ("approved", "edit")
    assert "Run 1 is now awaiting approval." in capsys.readouterr().out.replace(
        f"Run {checkpoint.run_id}", "Run 1"
    )
    # A second decision on the same checkpoint is refused, as the API's 409.
    assert cli.main(["approvals", "approve", str(checkpoint.pk), "--user", "ada"]) == 2
    assert "already" in capsys.readouterr().err
    deploy = Checkpoint.objects.get(status=Checkpoint.Status.PENDING)
    stop = ["reject", str(deploy.pk), "--stop", "--comment", "Not today.", "--user", "ada"]
    assert cli.main(["approvals", *stop]) == 0
    assert Run.objects.get().status == Run.Status.STOPPED


def test_password_sets_a_users_password_from_stdin(demo, monkeypatch, capsys):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("a-new-long-passphrase\n"))
    assert cli.main(["password", "admin"]) == 0
    assert "Password of admin changed." in capsys.readouterr().out
    assert Client().login(username="admin", password="a-new-long-passphrase")
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    assert cli.main(["password", "admin"]) == 2
    assert "empty password" in capsys.readouterr().err


def test_a_restart_honours_orchestra_admin_password(demo, settings, capsys):
    settings.ORCHESTRA_ADMIN_PASSWORD = "chosen-on-restart-1"
    assert cli.main(["seed"]) == 0
    assert "the value of ORCHESTRA_ADMIN_PASSWORD (changed to it now)" in capsys.readouterr().out
    assert Client().login(username="admin", password="chosen-on-restart-1")
    assert cli.main(["seed"]) == 0
    out = capsys.readouterr().out
    assert "ORCHESTRA_ADMIN_PASSWORD" in out and "changed to it now" not in out


@pytest.fixture
def unfrozen():
    """`settle_heap` freezes this process's objects: thawed again for the other tests."""
    import gc

    gc.unfreeze()
    yield gc
    gc.unfreeze()


def test_the_server_settles_its_heap_before_it_serves(monkeypatch, unfrozen):
    """What starting made is out of the full collections once daphne runs (`settle_heap`)."""
    import daphne.server

    from orchestra.cli.serve import serve

    frozen_when_run: list[int] = []

    class Served:
        abort_start, listening_addresses = False, [("127.0.0.1", 8999)]

        def __init__(self, **options) -> None:
            pass

        def run(self) -> None:
            frozen_when_run.append(unfrozen.get_freeze_count())

    monkeypatch.setattr(daphne.server, "Server", Served)
    assert serve("127.0.0.1", 8999, static=False, access_log=False) == 0
    assert frozen_when_run[0] > 10_000


@pytest.mark.parametrize("ready", ["worker_ready", "worker_process_init"])
def test_a_worker_settles_its_heap_once_ready(settings, monkeypatch, unfrozen, ready):
    """A worker's process (a prefork pool's too) freezes what starting made once Celery says
    it is ready. (Celery itself is not started: its signal is sent here.)"""
    from celery import signals

    from orchestra.celery import app

    frozen: list[int] = []

    def start(argv) -> None:
        frozen.append(unfrozen.get_freeze_count())
        getattr(signals, ready).send(sender=None)
        frozen.append(unfrozen.get_freeze_count())

    monkeypatch.setattr(app, "start", start)
    settings.REDIS_URL = "redis://127.0.0.1:6379/7"
    assert cli.main(["worker", "--processes", "1", "--pool", "threads"]) == 0
    assert frozen[0] == 0 and frozen[1] > 10_000
