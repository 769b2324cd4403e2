"""The approval policy: each outcome, first match wins, and the fail-closed cases."""

import pytest

from approvals.models import PolicyRule
from approvals.policies import DEFAULT_RULES, Call, evaluate, install_default_policy
from orchestra.models import Project

pytestmark = pytest.mark.django_db


@pytest.fixture
def project(db) -> Project:
    project = Project.objects.create(
        slug="shop",
        name="Shop",
        test_command="python3 -m unittest",
        command_allowlist=["ruff check"],
    )
    install_default_policy(project, DEFAULT_RULES)
    return project


def outcome(project, tool, arguments, claims=(), role="coder", run_id=None):
    return evaluate(project, Call(tool, arguments, role, tuple(claims)), run_id=run_id)


def test_the_default_policy(project):
    assert outcome(project, "read_file", {"path": "a.py"}).outcome == "allow"
    inside = outcome(project, "write_file", {"path": "src/a.py", "content": ""}, ["src/a.py"])
    assert inside.outcome == "allow"
    folder = outcome(project, "write_file", {"path": "src/b/c.py", "content": ""}, ["src/"])
    assert folder.outcome == "allow"
    outside = outcome(project, "write_file", {"path": "setup.py", "content": ""}, ["src/a.py"])
    assert outside.outcome == "require_approval"
    patch = "--- a/src/a.py\n+++ b/src/a.py\n@@ -1 +1 @@\n-x\n+y\n"
    patch += "--- a/b.py\n+++ b/b.py\n@@ -1 +1 @@\n-x\n+y\n"
    assert outcome(project, "apply_patch", {"patch": patch}, ["src/a.py"]).outcome == (
        "require_approval"
    )  # one of the two files lies outside the claims
    assert outcome(project, "run_command", {"command": "rm -rf /"}).outcome == "require_approval"
    assert outcome(project, "run_tests", {}).outcome == "allow"
    assert outcome(project, "run_command", {"command": "ruff check src"}).outcome == "allow"
    assert outcome(project, "run_command", {"command": "ruffian check"}).outcome == (
        "require_approval"
    )
    deploy = outcome(project, "deploy", {"environment": "production"})
    assert deploy.outcome == "require_approval"
    assert deploy.approvals_required == 2 and deploy.exclude_task_creator


def test_first_match_wins(project):
    PolicyRule.objects.create(
        project=project,
        position=1,
        tool="run_command",
        arguments={"command": "git push*"},
        outcome="deny",
    )
    PolicyRule.objects.create(
        project=project,
        position=2,
        tool="run_command",
        arguments={"command": "git *"},
        outcome="allow",
    )
    assert outcome(project, "run_command", {"command": "git push origin"}).outcome == "deny"
    assert outcome(project, "run_command", {"command": "git status"}).outcome == "allow"
    assert outcome(project, "run_command", {"command": "make"}).outcome == "require_approval"
    PolicyRule.objects.create(
        project=project,
        position=0,
        risk="deploy",
        arguments={"environment": "production"},
        outcome="deny",
        name="Never production",
    )
    denied = outcome(project, "deploy", {"environment": "production"})
    assert denied.outcome == "deny" and "Never production" in denied.reason
    assert outcome(project, "deploy", {"environment": "staging"}).outcome == "require_approval"


def test_a_rule_matches_on_the_agents_role(project):
    PolicyRule.objects.create(
        project=project, position=1, agent_role="researcher", risk="exec", outcome="deny"
    )
    assert outcome(project, "run_command", {"command": "ls"}, role="researcher").denied
    assert not outcome(project, "run_command", {"command": "ls"}, role="coder").denied


def test_fail_closed(project):
    # Arguments that could not be parsed.
    assert outcome(project, "write_file", None).outcome == "require_approval"
    assert outcome(project, "deploy", None).outcome == "deny"
    # A tool the policy does not know.
    assert outcome(project, "format_disk", {}).outcome == "deny"
    # An argument a rule cannot read: the safe outcome, not the rule's allow.
    PolicyRule.objects.create(
        project=project,
        position=0,
        tool="deploy",
        arguments={"environment": "dev*"},
        outcome="allow",
    )
    assert outcome(project, "deploy", {"environment": ["dev"]}).outcome == "deny"
    PolicyRule.objects.create(
        project=project,
        position=0,
        tool="write_file",
        arguments={"path": "docs/*"},
        outcome="allow",
    )
    assert outcome(project, "write_file", {"path": {"x": 1}}).outcome == "require_approval"
    # No rule matches at all.
    PolicyRule.objects.filter(project=project).delete()
    assert outcome(project, "read_file", {"path": "a"}).outcome == "require_approval"
    assert outcome(project, "deploy", {"environment": "dev"}).outcome == "deny"


def test_run_rules_come_first_and_revoked_ones_do_not_count(project, demo, owner):
    from django.utils import timezone

    from orchestra.models import Run, Task

    task = Task.objects.create(project=project, title="t", created_by=owner)
    run = Run.objects.create(task=task, project=project)
    rule = PolicyRule.objects.create(
        project=project, run=run, tool="run_command", outcome="allow", position=0
    )
    assert outcome(project, "run_command", {"command": "make"}, run_id=run.pk).allowed
    assert not outcome(project, "run_command", {"command": "make"}).allowed  # other runs
    rule.revoked_at = timezone.now()
    rule.save()
    assert not outcome(project, "run_command", {"command": "make"}, run_id=run.pk).allowed
