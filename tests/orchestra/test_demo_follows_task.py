"""The demo model follows the task a person typed: "Add a farewell module" plans farewell
steps, writes src/farewell.py and its test, runs that test, and reports farewell."""

import pytest

from agents import workspace as git
from agents.llm.demo import module_source, unit_tests_for
from agents.llm.demo_subject import subject_of
from agents.models import ToolCall
from approvals.models import Checkpoint
from orchestra.engine import decide_checkpoint, start_run
from orchestra.engine.workspaces import repository_for
from orchestra.models import Run

pytestmark = pytest.mark.django_db(transaction=True)


def approve_until_done(run: Run, approver) -> None:
    """Approve the command and the deploy (and, where no sandbox is in force, the test
    command and the escalation it leads to), one at a time, as a person would."""
    for _ in range(6):
        checkpoint = Checkpoint.objects.filter(run=run, status=Checkpoint.Status.PENDING).first()
        if checkpoint is None:
            return
        decide_checkpoint(approver, checkpoint, "approve")


def test_a_farewell_task_plans_writes_tests_and_reports_farewell(demo, owner, approver):
    run = start_run(owner, demo, "Add a farewell module", "Say goodbye to a person by name.")
    approve_until_done(run, approver)
    run.refresh_from_db()
    assert run.status == Run.Status.COMPLETED, run.error

    steps = {s.key: s for s in run.steps.all()}
    assert steps["implement"].title == "Implement the farewell module"
    assert steps["implement"].brief["objective"] == (
        "Write src/farewell.py with a farewell(name) function."
    )
    assert steps["implement"].claims == ["src/farewell.py"]
    assert steps["tests"].claims == ["tests/test_farewell.py"]
    assert steps["implement"].revisions == 1, "the reviewer still asks for one revision"

    repo = repository_for(demo)
    subject = subject_of("Add a farewell module")
    assert git.file_at(repo, run.branch, "src/farewell.py") == module_source(subject, revised=True)
    assert git.file_at(repo, run.branch, "tests/test_farewell.py") == unit_tests_for(subject)
    assert "src/farewell.py" in git.file_at(repo, run.branch, "notes/research.md")
    assert git.file_at(repo, run.branch, "src/greeting.py") is None

    # The test the coder wrote was run by the project's test command, and passed.
    tests_run = ToolCall.objects.get(run=run, tool="run_tests")
    assert tests_run.status == ToolCall.Status.SUCCEEDED, tests_run.result
    assert "Ran 2 tests" in tests_run.result and "OK" in tests_run.result

    assert run.report.startswith("# Report: Add a farewell module")
    assert "Implement the farewell module" in run.report
    assert "`src/farewell.py` now has `farewell(name)`" in run.report
    everything = run.report + repr([(s.title, s.brief, s.claims) for s in steps.values()])
    assert "greet" not in everything.lower()


@pytest.mark.parametrize(
    ("title", "description", "module", "function"),
    [
        ("Add a farewell module", "", "farewell", "farewell"),
        ("Add a shout helper", "", "shout", "shout"),
        ("Implement rate limiting", "", "rate_limiting", "rate_limiting"),
        ("Add a greeting module", "", "greeting", "greet"),
        ("Ship the greeting", "", "greeting", "greet"),
        ("Do it", "Add a countdown timer", "countdown_timer", "countdown_timer"),
        ("Do it", "", "greeting", "greet"),
        ("Add a class", "", "class_tools", "class_tools"),
    ],
)
def test_the_subject_comes_from_the_title_then_the_description(
    title, description, module, function
):
    subject = subject_of(title, description)
    assert (subject.module, subject.function) == (module, function)
    compile(module_source(subject, revised=True), subject.source, "exec")
    compile(unit_tests_for(subject), subject.test, "exec")
