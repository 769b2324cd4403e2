from django.shortcuts import get_object_or_404, render

from agents.models import ModelCall
from orchestra.access import get_run_for_user
from orchestra.dashboard import queries
from orchestra.dashboard.auth import login_required


@login_required
def trace(request, run_id: int):
    run = get_run_for_user(request.user, run_id)
    return render(request, "dashboard/trace.html", {"run": run, "trace": queries.trace(run)})


@login_required
def model_call(request, run_id: int, call_id: int):
    """One model call: the messages it was sent (a prefix of its agent run's conversation)
    and what came back."""
    run = get_run_for_user(request.user, run_id)
    call = get_object_or_404(
        ModelCall.objects.select_related("agent_run__step"), pk=call_id, run=run
    )
    return render(
        request,
        "dashboard/model_call.html",
        {
            "run": run,
            "call": call,
            "agent_run": call.agent_run,
            "sent": call.agent_run.messages[: call.message_count],
            "reply": [call.response] if call.response else [],
        },
    )
