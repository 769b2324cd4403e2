"""What a run did, as its step and trace pages show it: each step with its agents' attempts,
and each model call with the exact messages it sent and the response it got."""

from django.db.models import Prefetch
from django.http import Http404, HttpRequest

from agents.models import AgentRun, ModelCall
from orchestra.access import get_run_for_user
from orchestra.api.app import api, request_user
from orchestra.api.pages import DEFAULT_LIMIT, paginate_in_order
from orchestra.api.runs import step_json
from orchestra.api.schemas import ErrorOut, ModelCallOut, RunStepListOut, iso


@api.get(
    "/runs/{run_id}/steps",
    response={200: RunStepListOut, 400: ErrorOut, 404: ErrorOut},
    summary="A run's steps with their briefs, outputs and agents' attempts",
)
def list_steps(
    request: HttpRequest, run_id: int, cursor: str | None = None, limit: int = DEFAULT_LIMIT
):
    """In plan order, `limit` at a time; each attempt names its profile version and lists
    its model calls' ids (read one at `/api/model-calls/{id}`)."""
    run = get_run_for_user(request_user(request), run_id)
    attempts = AgentRun.objects.select_related("profile_version__profile__project").order_by(
        "started_at", "pk"
    )
    steps = run.steps.prefetch_related(Prefetch("agent_runs", queryset=attempts))
    page, next_url = paginate_in_order(request, steps, by="position", cursor=cursor, limit=limit)
    calls: dict[int, list[int]] = {}
    for agent_run_id, pk in (
        ModelCall.objects.filter(run=run, agent_run__step__in=page)
        .order_by("started_at", "pk")
        .values_list("agent_run_id", "pk")
    ):
        calls.setdefault(agent_run_id, []).append(pk)
    return {
        "steps": [
            {
                **step_json(step),
                "position": step.position,
                "brief": step.brief,
                "output": step.output,
                "agent_runs": [
                    _attempt_json(a, calls.get(a.pk, [])) for a in step.agent_runs.all()
                ],
            }
            for step in page
        ],
        "next": next_url,
    }


@api.get(
    "/model-calls/{call_id}",
    response={200: ModelCallOut, 404: ErrorOut},
    summary="One model call: the messages sent and the response",
)
def get_model_call(request: HttpRequest, call_id: int):
    call = ModelCall.objects.select_related("agent_run__step").filter(pk=call_id).first()
    if call is None:
        raise Http404("No such model call.")
    try:
        get_run_for_user(request_user(request), call.run_id)
    except Http404:
        raise Http404("No such model call.") from None
    agent_run = call.agent_run
    return {
        "id": call.pk,
        "run": call.run_id,
        "step": agent_run.step.key if agent_run.step else None,
        "agent_run": agent_run.pk,
        "model": call.model,
        "provider": call.provider,
        "started_at": iso(call.started_at),
        "latency_ms": call.latency_ms,
        "input_tokens": call.input_tokens,
        "output_tokens": call.output_tokens,
        "cost_usd": str(call.cost_usd),
        "error": call.error,
        "messages": agent_run.messages[: call.message_count],
        "response": call.response,
        "tool_calls": call.tool_calls,
    }


def _attempt_json(agent_run: AgentRun, calls: list[int]) -> dict:
    version = agent_run.profile_version
    return {
        "id": agent_run.pk,
        "purpose": agent_run.purpose,
        "role": agent_run.role,
        "model": agent_run.model,
        "attempt": agent_run.attempt,
        "status": agent_run.status,
        "profile_version": str(version) if version else None,
        "model_calls": calls,
    }
