"""The agent loop: an explicit state machine over a conversation stored in the database.

A turn returns exactly one of `FinalOutput`, `RunAgain`, `NeedsApproval` or `Failed`. The
conversation is saved after every change, so a paused agent (waiting for a human) holds no
worker: `AgentSession(...).run()` on the same AgentRun, in any process, days later, carries
on from the first tool call that has no answer yet. Policy, checkpoints and the step belong to
the loop's host (`agents.host.Host`); the loop records its own model and tool calls.
"""

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

from agents.host import Gate, Host
from agents.llm.base import ModelClient, ModelError, ModelReply, ToolRequest
from agents.models import AgentRun, ModelCall, ToolCall
from agents.tools import (
    Risk,
    Tool,
    ToolContext,
    ToolError,
    deploy_receipt,
    patch_paths,
    schema_errors,
    write_diff,
)
from orchestra.events import add_usage, emit, locked_run
from orchestra.models import Project, Run, Step

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FinalOutput:
    content: str
    data: dict | None = None


@dataclass(frozen=True)
class RunAgain:
    pass


@dataclass(frozen=True)
class NeedsApproval:
    checkpoint_id: int


@dataclass(frozen=True)
class Failed:
    error: str
    cancelled: bool = False


Outcome = FinalOutput | NeedsApproval | Failed
# Calls whose effects reach past the worktree: recorded before they run, never run twice.
SIDE_EFFECTS = (Risk.EXEC, Risk.DEPLOY)
TurnOutcome = Outcome | RunAgain


@dataclass(frozen=True)
class OutputTool:
    """A tool through which the agent hands back structured output (a plan, a verdict).

    `check` returns the reasons the output is unacceptable; they go back to the model, at most
    `max_invalid` times, then the agent fails naming the last reasons.
    """

    name: str
    description: str
    parameters: dict
    check: Callable[[dict], list[str]] | None = None
    max_invalid: int = 3

    def as_openai(self) -> dict:
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


def cost_of(model: str, input_tokens: int, output_tokens: int) -> Decimal:
    prices = settings.ORCHESTRA_PRICES.get(model)
    if prices is None:
        return Decimal("0")
    per_million = Decimal(1_000_000)
    return (Decimal(input_tokens) * prices[0] + Decimal(output_tokens) * prices[1]) / per_million


class AgentSession:
    def __init__(
        self,
        agent_run: AgentRun,
        *,
        host: Host,
        project: Project,
        step: Step | None,
        client: ModelClient,
        temperature: float,
        toolset: dict[str, Tool],
        turn_limit: int,
        output_tool: OutputTool | None = None,
        workspace=None,
        on_final: Callable[[Run, FinalOutput], object] | None = None,
        releases=None,
        integrated: Callable | None = None,
    ):
        """`on_final(run, outcome)` runs inside the transaction that records the final reply
        (the run is locked), so the caller's next transition costs no extra transaction; its
        return value is kept in `final_result`."""
        self.on_final = on_final
        self.final_result: object = None
        self.agent_run = agent_run
        self.host = host
        self.project = project
        self.step = step
        self.client = client
        self.temperature = temperature
        self.toolset = toolset
        self.turn_limit = turn_limit
        self.output_tool = output_tool
        # The step's git worktree; the releases folder and the run's integrated tree are
        # what `deploy` ships.
        self.workspace = workspace
        self.releases = releases
        self.integrated = integrated

    # --- the state machine ---------------------------------------------------------------
    def run(self) -> Outcome:
        self._finalised = False
        while True:
            outcome = self.run_turn()
            if isinstance(outcome, RunAgain):
                continue
            if isinstance(outcome, FinalOutput) and self.on_final and not self._finalised:
                # A final answer reached through the tool-call path (e.g. an output that was
                # refused once): the hook still runs, in a transaction of its own.
                with locked_run(self.agent_run.run_id) as run:
                    self.final_result = self.on_final(run, outcome)
            return outcome

    def run_turn(self) -> TurnOutcome:
        # A fresh attempt was claimed a moment ago under the run lock; later turns re-check.
        fresh = self.agent_run.turns == 0 and len(self.messages) == 2
        if not fresh and self._stopped():
            return Failed("the run was stopped", cancelled=True)
        pending = self._unanswered_tool_calls()
        if pending:
            return self._handle_tool_calls(pending, resumed=True)
        if self.agent_run.turns >= self.turn_limit:
            return Failed(f"turn limit of {self.turn_limit} reached without a final answer")
        try:
            reply, record = self._call_model()
        except ModelError as exc:
            return Failed(f"model call failed: {exc}")
        final = self._plain_final(reply)
        with locked_run(self.agent_run.run_id) as run:
            record(run)  # the call, its usage, and the reply appended to the conversation
            if final is not None:
                if final.data is not None:
                    self._write_output_call(run, reply.tool_calls[0], final.data)
                if self.on_final is not None:
                    self.final_result = self.on_final(run, final)
                    self._finalised = True
                return final
        if reply.tool_calls:
            ordinal = self._tool_calls_before_last()
            return self._handle_tool_calls(
                [(ordinal + i, call) for i, call in enumerate(reply.tool_calls)], resumed=False
            )
        if self.output_tool is not None:
            self._append(
                {
                    "role": "user",
                    "content": f"Give your answer by calling the `{self.output_tool.name}` tool.",
                }
            )
            return RunAgain()
        if not (reply.content or "").strip():
            return Failed("the model returned an empty reply")
        return FinalOutput(reply.content or "")

    # --- conversation bookkeeping --------------------------------------------------------
    @property
    def messages(self) -> list[dict]:
        return self.agent_run.messages

    def _append(self, message: dict) -> None:
        self.agent_run.messages.append(message)
        AgentRun.objects.filter(pk=self.agent_run.pk).update(messages=self.agent_run.messages)

    def _tool_calls_before_last(self) -> int:
        return sum(len(m.get("tool_calls") or []) for m in self.messages[:-1])

    def _unanswered_tool_calls(self) -> list[tuple[int, ToolRequest]]:
        """Tool calls of the last assistant message that have no tool result yet."""
        for index in range(len(self.messages) - 1, -1, -1):
            message = self.messages[index]
            if message.get("role") != "assistant":
                continue
            calls = message.get("tool_calls") or []
            answered = {
                m.get("tool_call_id") for m in self.messages[index + 1 :] if m["role"] == "tool"
            }
            before = sum(len(m.get("tool_calls") or []) for m in self.messages[:index])
            return [
                (
                    before + i,
                    ToolRequest(c["id"], c["function"]["name"], c["function"]["arguments"]),
                )
                for i, c in enumerate(calls)
                if c["id"] not in answered
            ]
        return []

    def _stopped(self) -> bool:
        """Checked before every turn: the run ended or the step was cancelled."""
        if self.step is None:
            return Run.objects.filter(pk=self.agent_run.run_id, status__in=Run.TERMINAL).exists()
        return (
            Step.objects.filter(pk=self.step.pk)
            .filter(Q(status=Step.Status.CANCELLED) | Q(run__status__in=Run.TERMINAL))
            .exists()
        )

    # --- model calls -----------------------------------------------------------------------
    def _tools_for_model(self) -> list[dict]:
        tools = [tool.as_openai() for tool in self.toolset.values()]
        if self.output_tool is not None:
            tools.append(self.output_tool.as_openai())
        return tools

    def _call_model(self) -> tuple[ModelReply, Callable[[Run], None]]:
        """Ask the model. Returns the reply and the function that records it inside the
        caller's `locked_run`; a failed call is recorded here, in its own transaction."""
        started_at = timezone.now()
        began = time.perf_counter()
        sent = len(self.messages)
        try:
            reply = self.client.complete(
                model=self.agent_run.model,
                messages=self.messages,
                tools=self._tools_for_model(),
                temperature=self.temperature,
            )
        except ModelError as exc:
            latency_ms = (time.perf_counter() - began) * 1000
            with locked_run(self.agent_run.run_id) as run:
                self._write_model_call(run, started_at, latency_ms, sent, None, error=str(exc))
            raise
        latency_ms = (time.perf_counter() - began) * 1000

        def record(run: Run) -> None:
            self._write_model_call(run, started_at, latency_ms, sent, reply)

        return reply, record

    def _plain_final(self, reply: ModelReply) -> FinalOutput | None:
        """The outcome when this reply ends the agent with no further checks: a text answer,
        or the one output-tool call of an output tool without a `check`, valid as sent."""
        if not reply.tool_calls:
            if self.output_tool is None and (reply.content or "").strip():
                return FinalOutput(reply.content or "")
            return None
        output = self.output_tool
        if output is None or output.check is not None or len(reply.tool_calls) != 1:
            return None
        request = reply.tool_calls[0]
        if request.name != output.name:
            return None
        arguments, errors = self._parse_arguments(request, output.parameters)
        if errors:
            return None
        return FinalOutput(content=json.dumps(arguments), data=arguments)

    def _write_output_call(self, run: Run, request: ToolRequest, arguments: dict) -> None:
        ordinal = self._tool_calls_before_last()
        self._finish_call(
            self._idempotency_key(ordinal),
            request,
            None,
            arguments,
            ToolCall.Status.SUCCEEDED,
            "accepted",
            run=run,
        )

    def _write_model_call(
        self, run: Run, started_at, latency_ms: float, sent: int, reply: ModelReply | None, error=""
    ) -> None:
        """Inside the caller's `locked_run`: the call, its usage on the attempt, step and run,
        the assistant message appended to the stored conversation, the `model.called` event."""
        model = self.agent_run.model
        input_tokens = reply.input_tokens if reply else 0
        output_tokens = reply.output_tokens if reply else 0
        cost = cost_of(model, input_tokens, output_tokens)
        self.agent_run.turns += 1
        if reply is not None:
            self.agent_run.messages.append(reply.as_message())
        call = ModelCall.objects.create(
            agent_run=self.agent_run,
            run_id=run.pk,
            model=model,
            endpoint=self.client.endpoint,
            message_count=sent,
            response=reply.as_message() if reply else {},
            tool_calls=[c.name for c in reply.tool_calls] if reply else [],
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            latency_ms=latency_ms,
            cost_usd=cost,
            error=error,
            started_at=started_at,
        )
        usage = {
            "input_tokens": F("input_tokens") + input_tokens,
            "output_tokens": F("output_tokens") + output_tokens,
            "cost_usd": F("cost_usd") + cost,
        }
        AgentRun.objects.filter(pk=self.agent_run.pk).update(
            turns=self.agent_run.turns, messages=self.agent_run.messages, **usage
        )
        add_usage(run, input_tokens, output_tokens, cost)
        self.host.record_usage(input_tokens, output_tokens, cost)
        emit(
            run,
            "model.called",
            step=self.step,
            actor=self.agent_run.role,
            data={
                "model_call": call.pk,
                "agent_run": self.agent_run.pk,
                "purpose": self.agent_run.purpose,
                "model": model,
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "cost_usd": str(cost),
                "latency_ms": round(latency_ms, 1),
                "tool_calls": call.tool_calls,
                "error": error,
            },
        )

    # --- tool calls ------------------------------------------------------------------------
    def _handle_tool_calls(
        self, calls: list[tuple[int, ToolRequest]], *, resumed: bool
    ) -> TurnOutcome:
        """Answer the calls in order. Only calls found unanswered in a stored conversation
        (`resumed`) can have a record already; a reply just received cannot, since a call's
        record and its answer are written in one transaction."""
        for ordinal, request in calls:
            outcome = self._handle_tool_call(ordinal, request, resumed=resumed)
            if outcome is not None:
                return outcome
        return RunAgain()

    def _idempotency_key(self, ordinal: int) -> str:
        agent_run = self.agent_run
        where = self.step.key if self.step else agent_run.purpose
        return f"{agent_run.run_id}:{where}:{agent_run.purpose}:{agent_run.attempt}:{ordinal}"

    def _answer(self, request: ToolRequest, content: str) -> None:
        self._append({"role": "tool", "tool_call_id": request.id, "content": content})

    def _handle_tool_call(
        self, ordinal: int, request: ToolRequest, *, resumed: bool
    ) -> Outcome | None:
        """Answer one tool call, or return the outcome that ends the turn."""
        key = self._idempotency_key(ordinal)
        recorded = ToolCall.objects.filter(idempotency_key=key).first() if resumed else None
        if recorded is not None:
            return self._continue_recorded(recorded, request)
        if self.output_tool is not None and request.name == self.output_tool.name:
            return self._handle_output(key, request)
        tool = self.toolset.get(request.name)
        if tool is None:
            self._finish_call(
                key,
                request,
                None,
                {},
                ToolCall.Status.REFUSED,
                f"refused: the tool `{request.name}` is not available to the "
                f"{self.agent_run.role} agent",
            )
            return None
        arguments, errors = self._parse_arguments(request, tool.parameters)
        if errors:
            self._finish_call(
                key,
                request,
                tool,
                arguments,
                ToolCall.Status.INVALID,
                "invalid arguments: " + "; ".join(errors),
            )
            return None
        gate = self.host.gate(tool, arguments)
        if gate.denied:
            self._finish_call(
                key,
                request,
                tool,
                arguments,
                ToolCall.Status.DENIED,
                f"denied by the project's policy ({gate.reason}); do not try this call again",
            )
            return None
        if not gate.allowed:
            if self.step is None:
                self._finish_call(
                    key,
                    request,
                    tool,
                    arguments,
                    ToolCall.Status.REFUSED,
                    f"refused: `{tool.name}` needs a human approval, which only a step can ask",
                )
                return None
            return self._request_approval(key, request, tool, arguments, gate)
        self._execute(key, request, tool, arguments)
        return None

    def _parse_arguments(self, request: ToolRequest, schema: dict) -> tuple[dict, list[str]]:
        """The call's arguments as an object, and every reason they do not fit `schema`."""
        try:
            arguments = json.loads(request.arguments or "{}")
        except json.JSONDecodeError as exc:
            return {}, [f"arguments are not valid JSON ({exc.msg} at position {exc.pos})"]
        if not isinstance(arguments, dict):
            return {}, ["arguments must be a JSON object"]
        return arguments, schema_errors(schema, arguments)

    def _handle_output(self, key: str, request: ToolRequest) -> Outcome | None:
        assert self.output_tool is not None
        arguments, errors = self._parse_arguments(request, self.output_tool.parameters)
        if not errors and self.output_tool.check is not None:
            errors = self.output_tool.check(arguments)
        if not errors:
            self._finish_call(key, request, None, arguments, ToolCall.Status.SUCCEEDED, "accepted")
            return FinalOutput(content=json.dumps(arguments), data=arguments)
        self._finish_call(
            key,
            request,
            None,
            arguments,
            ToolCall.Status.INVALID,
            "rejected, fix these problems and call the tool again:\n- " + "\n- ".join(errors),
        )
        invalid = ToolCall.objects.filter(
            agent_run=self.agent_run, tool=self.output_tool.name, status=ToolCall.Status.INVALID
        ).count()
        if invalid >= self.output_tool.max_invalid:
            return Failed(
                f"`{self.output_tool.name}` was rejected {invalid} times; last reasons: "
                + "; ".join(errors)
            )
        return None

    def _tool_context(self, key: str) -> ToolContext:
        project = self.project
        return ToolContext(
            workspace=self.workspace,
            run_id=self.agent_run.run_id,
            step_key=self.step.key if self.step else "",
            environment={},
            test_command=project.test_command,
            deploy_command=project.deploy_command,
            command_allowlist=tuple(project.command_allowlist or ()),
            idempotency_key=key,
            releases=self.releases,
            integrated=self.integrated,
        )

    def _run_tool(self, tool: Tool, arguments: dict, key: str) -> tuple[str, str]:
        """Run the tool; returns (status, result text). Tool failures go to the model."""
        try:
            return ToolCall.Status.SUCCEEDED, tool.func(self._tool_context(key), arguments)
        except ToolError as exc:
            return ToolCall.Status.FAILED, f"error: {exc}"
        except Exception as exc:  # a broken tool must not kill the worker
            logger.exception("tool %s crashed", tool.name)
            return ToolCall.Status.FAILED, f"error: the tool crashed ({type(exc).__name__}: {exc})"

    def _execute(self, key: str, request: ToolRequest, tool: Tool, arguments: dict) -> None:
        started_at = timezone.now()
        if tool.risk in SIDE_EFFECTS:
            # The intent is committed before the side effect starts, so a worker that dies
            # mid-call leaves a record that stops the call from running a second time.
            with locked_run(self.agent_run.run_id) as run:
                call = self._new_tool_call(
                    run,
                    key,
                    request,
                    tool,
                    arguments,
                    ToolCall.Status.RUNNING,
                    "",
                    started_at,
                    None,
                )
                self.host.renew_lease()
            self._run_side_effect(call, request, tool, arguments)
            return
        status, result = self._run_tool(tool, arguments, key)
        if tool.risk == Risk.WRITE and status == ToolCall.Status.SUCCEEDED:
            self._widen_lease(tool, arguments)
        self._finish_call(key, request, tool, arguments, status, result, started_at=started_at)

    def _widen_lease(self, tool: Tool, arguments: dict) -> None:
        """A step leases what it touches, not only what it claimed: the dispatcher keeps
        other steps off these paths until this one is merged."""
        paths = patch_paths(arguments["patch"]) if tool.name == "apply_patch" else []
        paths = paths or [arguments.get("path", "")]
        self.host.touched([p for p in paths if p])

    def _run_side_effect(
        self, call: ToolCall, request: ToolRequest, tool: Tool, arguments: dict, note: str = ""
    ) -> None:
        """Run a recorded call (status `running` in the database) and record its result."""
        status, result = self._run_tool(tool, arguments, call.idempotency_key)
        self._record_result(call, request, status, note + result, arguments)

    def _record_result(
        self, call: ToolCall, request: ToolRequest, status: str, result: str, arguments: dict
    ) -> None:
        with locked_run(self.agent_run.run_id) as run:
            ToolCall.objects.filter(pk=call.pk).update(
                status=status, result=result, arguments=arguments, finished_at=timezone.now()
            )
            call.status, call.result, call.arguments = status, result, arguments
            self._emit_tool_called(run, call)
            self._answer(request, result)

    def _finish_call(
        self,
        key: str,
        request: ToolRequest,
        tool: Tool | None,
        arguments: dict,
        status: str,
        result: str,
        *,
        started_at=None,
        run: Run | None = None,
    ) -> None:
        """Record a finished tool call, emit `tool.called`, and hand the result to the model:
        inside the caller's `locked_run` when `run` is given, else in a transaction of its own."""
        if run is None:
            with locked_run(self.agent_run.run_id) as locked:
                self._finish_call(
                    key, request, tool, arguments, status, result, started_at=started_at, run=locked
                )
            return
        now = timezone.now()
        call = self._new_tool_call(
            run, key, request, tool, arguments, status, result, started_at or now, now
        )
        self._emit_tool_called(run, call)
        self._answer(request, result)

    def _new_tool_call(
        self,
        run: Run,
        key: str,
        request: ToolRequest,
        tool: Tool | None,
        arguments: dict,
        status: str,
        result: str,
        started_at,
        finished_at,
    ) -> ToolCall:
        return ToolCall.objects.create(
            agent_run=self.agent_run,
            run_id=run.pk,
            step=self.step,
            call_id=request.id,
            tool=request.name,
            arguments=arguments,
            raw_arguments=request.arguments[:10_000],
            risk=tool.risk.value if tool else "",
            status=status,
            result=result,
            idempotency_key=key,
            started_at=started_at,
            finished_at=finished_at,
        )

    def _emit_tool_called(self, run: Run, call: ToolCall) -> None:
        emit(
            run,
            "tool.called",
            step=self.step,
            actor=self.agent_run.role,
            data={
                "tool_call": call.pk,
                "tool": call.tool,
                "risk": call.risk,
                "status": call.status,
                "arguments": call.arguments,
                "result": call.result[:500],
            },
        )

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
            self._run_side_effect(call, request, tool, arguments, note)
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
