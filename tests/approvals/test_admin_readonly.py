"""The admin cannot decide: checkpoints, votes, deliveries, audit records, events and the
agents' records are viewed in the Django admin, never added, changed or deleted there (a
decision goes through the approvals service, which checks, records and audits it)."""

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client

from agents.models import AgentRun, ModelCall, ToolCall
from approvals.models import AuditRecord, Checkpoint, Delivery, Vote
from orchestra.models import Event, Plan, Run, Step, Task

READ_ONLY = [Checkpoint, Vote, Delivery, AuditRecord, Event, Run, Plan, Step]
READ_ONLY += [AgentRun, ModelCall, ToolCall]


@pytest.fixture
def superuser(db):
    return get_user_model().objects.create_superuser("root", "root@example.test", "pw-root")


@pytest.fixture
def checkpoint(demo, owner) -> Checkpoint:
    task = Task.objects.create(project=demo, title="Ship it", created_by=owner)
    run = Run.objects.create(task=task, project=demo)
    return Checkpoint.objects.create(run=run, kind=Checkpoint.Kind.DEPLOY, shown={"why": "x"})


def as_user(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def change_url(checkpoint: Checkpoint) -> str:
    return f"/admin/approvals/checkpoint/{checkpoint.pk}/change/"


@pytest.mark.parametrize("model", READ_ONLY, ids=lambda m: m.__name__)
def test_engine_records_are_registered_read_only(model, rf, superuser):
    request = rf.get("/admin/")
    request.user = superuser
    model_admin = admin.site._registry[model]
    assert model_admin.has_view_permission(request)
    assert not model_admin.has_add_permission(request)
    assert not model_admin.has_change_permission(request)
    assert not model_admin.has_delete_permission(request)


def test_superuser_sees_a_checkpoint_without_a_save_button(superuser, checkpoint):
    response = as_user(superuser).get(change_url(checkpoint))
    assert response.status_code == 200
    body = response.content.decode()
    assert "deploy checkpoint" in body
    assert 'name="_save"' not in body
    assert 'name="_continue"' not in body
    assert "/delete/" not in body


def test_superuser_cannot_decide_a_checkpoint_by_posting_the_admin_form(superuser, checkpoint):
    response = as_user(superuser).post(
        change_url(checkpoint),
        {
            "run": checkpoint.run_id,
            "kind": "deploy",
            "status": "approved",
            "decision": "approve",
            "comment": "decided in the admin",
            "approvals_required": 1,
            "timeout_outcome": "reject",
            "shown": "{}",
            "arguments_diff": "[]",
            "excluded_approvers": "[]",
        },
    )
    assert response.status_code == 403
    checkpoint.refresh_from_db()
    assert (checkpoint.status, checkpoint.decision, checkpoint.comment) == ("pending", "", "")
    assert checkpoint.decided_by is None


def test_superuser_cannot_add_or_delete_checkpoints(superuser, checkpoint):
    client = as_user(superuser)
    assert client.get("/admin/approvals/checkpoint/add/").status_code == 403
    url = f"/admin/approvals/checkpoint/{checkpoint.pk}/delete/"
    assert client.post(url, {"post": "yes"}).status_code == 403
    bulk = client.post(
        "/admin/approvals/checkpoint/",
        {"action": "delete_selected", "_selected_action": [checkpoint.pk], "post": "yes"},
    )
    assert bulk.status_code in (200, 302)
    assert Checkpoint.objects.filter(pk=checkpoint.pk).exists()
    changelist = client.get("/admin/approvals/checkpoint/").content.decode()
    assert "delete_selected" not in changelist


def test_votes_cannot_be_added_in_the_admin(superuser, checkpoint, approver):
    response = as_user(superuser).post(
        "/admin/approvals/vote/add/", {"checkpoint": checkpoint.pk, "user": approver.pk}
    )
    assert response.status_code == 403
    assert not Vote.objects.exists()


def test_staff_with_view_permission_may_only_look(checkpoint, operator):
    operator.is_staff = True
    operator.save(update_fields=["is_staff"])
    operator.user_permissions.add(Permission.objects.get(codename="view_checkpoint"))
    client = as_user(operator)
    response = client.get(change_url(checkpoint))
    assert response.status_code == 200
    assert 'name="_save"' not in response.content.decode()
    assert client.post(change_url(checkpoint), {"status": "approved"}).status_code == 403
    checkpoint.refresh_from_db()
    assert checkpoint.status == "pending"


def test_anonymous_and_non_staff_are_sent_to_the_admin_login(checkpoint, outsider):
    for client in (Client(), as_user(outsider)):
        response = client.get(change_url(checkpoint))
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")
