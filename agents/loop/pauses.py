"""Pauses and resumes: a call that needs a person, and a call found recorded on resume.

A pause is persisted (tool call, checkpoint, step and agent state) in one transaction, so the
paused agent holds no worker; on resume, a recorded call is answered from its record or from
the decision it waited for, and a finished side effect never runs twice. `Pauses` is a part
of `AgentSession` (see `agents.loop.session`) and uses its state.
"""

import json

from django.utils import timezone

from agents.host import Gate
from agents.llm.base import ToolRequest
from agents.loop.outcomes import Failed, NeedsApproval, Outcome
from agents.models import AgentRun, ToolCall
from agents.tools import Tool, deploy_receipt, write_diff
from orchestra.events import locked_run


class Pauses:
    def _request_approval(
        self, key: str, request: ToolRequest, tool: Tool, arguments: dict, gate: Gate
    ) -> NeedsApproval | Failed:
        """Persist the pause: tool call, checkpoint, step and agent state in one transaction,
        so a decision arriving a moment later always finds the step waiting."""
        reason = next(
            (
                m.get("content")
                for m in reversed(self.messages)
                if m.get("role") == "assistant" and m.get("content")
            ),
            "",
        )
        preview = {**self._change_preview(tool, arguments), **self.host.preview(tool, arguments)}
        self.host.before_pause()
        with locked_run(self.agent_run.run_id) as run:
            if run.is_terminal:
                # Cancelled while the model was answering: no checkpoint for a dead run.
                return Failed("the run was stopped", cancelled=True)
            call = self._new_tool_call(
                run,
                key,
                request,
                tool,
                arguments,
                ToolCall.Status.AWAITING_APPROVAL,
                "",
                timezone.now(),
                None,
            )
            checkpoint_id = self.host.pause(
                run,
                call,
                gate,
                {
                    "tool": tool.name,
                    "risk": tool.risk.value,
                    "description": tool.description,
                    "arguments": arguments,
                    "reason": reason or "",
                    "agent": self.agent_run.role,
                    "step": self.step.key,
                    "brief": self.agent_run.brief,
                    "policy": gate.reason,
                    **preview,
                },
            )
            AgentRun.objects.filter(pk=self.agent_run.pk).update(status=AgentRun.Status.PAUSED)
        return NeedsApproval(checkpoint_id)

    def _change_preview(self, tool: Tool, arguments: dict) -> dict:
        """What a file-changing call would do to the worktree, for the approver."""
        if tool.name == "write_file":
            return {"diff": write_diff(self.workspace, arguments)}
        if tool.name == "apply_patch":
            return {"diff": arguments.get("patch", "")}
        return {}

    def _continue_recorded(self, call: ToolCall, request: ToolRequest) -> Outcome | None:
        """A call already recorded under this idempotency key: reuse its result, or act on
        the human decision it was waiting for. Never runs a finished side effect twice."""
        if call.status == ToolCall.Status.RUNNING:
            if self._outcome_unknown(call):
                return self._ask_about_lost_deploy(call)
            self._record_result(call, request, *self._interrupted(call), call.arguments)
            return None
        if call.status != ToolCall.Status.AWAITING_APPROVAL:
            self._answer(request, call.result)
            return None
        decision = self.host.decision_for(call)
        if decision.status == "pending":
            return NeedsApproval(decision.checkpoint_id)
        who = decision.who or "the system"
        tool = self.toolset.get(call.tool)
        if decision.status == "approved" and tool is not None:
            arguments = decision.arguments if decision.arguments is not None else call.arguments
            # Approved by a person, and still checked: a deny rule wins whoever asks, and
            # edited arguments are what runs.
            gate = self.host.gate(tool, arguments)
            if gate.denied:
                status = ToolCall.Status.DENIED
                result = f"denied by the project's policy ({gate.reason}); not run"
                self._record_result(call, request, status, result, arguments)
                return None
            note = ""
            if decision.arguments is not None:
                note = f"(run with arguments edited by {who}: {json.dumps(arguments)})\n"
            ToolCall.objects.filter(pk=call.pk).update(status=ToolCall.Status.RUNNING)
            self._run_side_effect(
                call, request, tool, arguments, note, approved_commit=decision.approved_commit
            )
            return None
        if decision.status == "approved":
            status, result = ToolCall.Status.REFUSED, f"refused: `{call.tool}` is unavailable"
        elif decision.status == "responded":
            status = ToolCall.Status.RESPONDED
            result = f"not run; {who} answered instead: {decision.comment}"
        else:
            status = ToolCall.Status.REJECTED
            result = f"rejected by {who}" + (
                f": {decision.comment}" if decision.comment else " (no comment)"
            )
        self._record_result(call, request, status, result, call.arguments)
        return None

    def _outcome_unknown(self, call: ToolCall) -> bool:
        """A deploy found `running` with no receipt: it may or may not have shipped."""
        return (
            call.tool == "deploy"
            and self.step is not None
            and (
                self.releases is None or deploy_receipt(self.releases, call.idempotency_key) is None
            )
        )

    def _ask_about_lost_deploy(self, call: ToolCall) -> NeedsApproval | Failed:
        """A deploy whose worker stopped mid-call is a question for a person, never a success
        or a silent failure: run it again, say it ran, or stop."""
        self.host.before_pause()
        with locked_run(self.agent_run.run_id) as run:
            if run.is_terminal:
                return Failed("the run was stopped", cancelled=True)
            ToolCall.objects.filter(pk=call.pk).update(status=ToolCall.Status.AWAITING_APPROVAL)
            call.status = ToolCall.Status.AWAITING_APPROVAL
            tool = self.toolset.get(call.tool)
            checkpoint_id = self.host.pause(
                run,
                call,
                Gate("ask", "the deploy may not have run: its worker stopped mid-call"),
                {
                    "tool": call.tool,
                    "risk": call.risk,
                    "description": tool.description if tool else "",
                    "arguments": call.arguments,
                    "reason": "",
                    "agent": self.agent_run.role,
                    "step": self.step.key,
                    "brief": self.agent_run.brief,
                    "policy": "the deploy may not have run: its worker stopped mid-call",
                    "outcome_unknown": True,
                    "question": (
                        "The worker running this deploy stopped before it recorded how the "
                        "deploy ended, and no receipt says it finished. Approve to run it "
                        "again, respond to say it ran (your comment goes to the agent), or "
                        "reject and stop."
                    ),
                    "started_at": call.started_at.isoformat() if call.started_at else None,
                },
            )
            AgentRun.objects.filter(pk=self.agent_run.pk).update(status=AgentRun.Status.PAUSED)
        return NeedsApproval(checkpoint_id)

    def _interrupted(self, call: ToolCall) -> tuple[str, str]:
        """A call found `running`: the worker that ran it stopped before recording how it
        ended. It is never run a second time; a deploy's receipt tells if it finished."""
        receipt = (
            deploy_receipt(self.releases, call.idempotency_key)
            if call.tool == "deploy" and self.releases is not None
            else None
        )
        if receipt is not None:
            return (
                ToolCall.Status.SUCCEEDED,
                "deployed; confirmed by its receipt after the worker that ran it stopped: "
                + str(receipt.get("result", "")),
            )
        return (
            ToolCall.Status.FAILED,
            f"interrupted: the worker running `{call.tool}` stopped before it finished. It is "
            "not run again automatically, so whatever it did stands; check the result before "
            "trying anything like it again.",
        )
