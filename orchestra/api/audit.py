"""A project's audit chain: export it as JSON lines, verify it."""

from django.http import HttpRequest, HttpResponse

from approvals import audit
from orchestra.api.app import api, request_user
from orchestra.api.schemas import AuditVerifyOut, ErrorOut
from orchestra.text import CleanText


@api.get(
    "/projects/{slug}/audit.jsonl",
    response={200: None, 403: ErrorOut, 404: ErrorOut},
    summary="The project's audit chain as JSON lines (admins and approvers)",
)
def export_audit(request: HttpRequest, slug: CleanText):
    """One record per line in seq order, hashes included, to verify the chain elsewhere."""
    project = audit.get_audit_project_for_user(request_user(request), slug)
    response = HttpResponse(content_type="application/x-ndjson; charset=utf-8")
    audit.export_jsonl(project, response)
    response["Content-Disposition"] = f'attachment; filename="audit-{project.slug}.jsonl"'
    return response


@api.get(
    "/projects/{slug}/audit/verify",
    response={200: AuditVerifyOut, 403: ErrorOut, 404: ErrorOut},
    summary="Check the project's audit chain (admins and approvers)",
)
def verify_audit(request: HttpRequest, slug: CleanText):
    result = audit.verify(audit.get_audit_project_for_user(request_user(request), slug))
    bad = result.first_bad
    return {
        "ok": result.ok,
        "count": result.count,
        "first_bad": {"seq": bad.seq, "id": bad.pk, "kind": bad.kind} if bad else None,
        "reason": result.reason,
    }
