"""The agent loop's state machine: turns, the stored conversation, and the model calls."""

import json
import time
from collections.abc import Callable

from django.db import NotSupportedError
from django.db.models import F, Func, JSONField
from django.utils import timezone

from agents.host import Host
from agents.llm.base import ModelClient, ModelError, ModelReply, ToolRequest, served_by
from agents.loop.calls import ToolCalls
from agents.loop.outcomes import (
    Failed,
    FinalOutput,
    NeedsApproval,
    Outcome,
    OutputTool,
    Paused,
    RunAgain,
    TurnOutcome,
    closing_fields,
    priced,
)
from agents.loop.pauses import Pauses
from agents.models import AgentRun, ModelCall, ToolCall
from agents.tools import Tool
from orchestra import slots
from orchestra.events import add_usage, emit, locked_run, recording
from orchestra.models import Project, Run, Step
from orchestra.prepared import Ahead, PreparedRead
from orchestra.writes import Added, insert_later, update_later


class Appended(Func):
    """A stored JSON list with `items` appended by the database: a turn sends the messages
    it adds, not the whole conversation again."""

    output_field = JSONField()

    def __init__(self, field: str, items: list):
        self.items = items
        super().__init__(F(field))

    def then(self, later) -> "Appended | None":
        """This append followed by `later`, one of the same field, as one."""
        if not isinstance(later, Appended) or later.source_expressions != self.source_expressions:
            return None
        return Appended(self.source_expressions[0].name, [*self.items, *later.items])

    def as_sql(self, compiler, connection, **extra):
        column, params = compiler.compile(self.source_expressions[0])
        sql, items = self.set_sql(column, connection)
        return sql, [*params, *items]

    def set_sql(self, column: str, connection) -> tuple[str, list]:
        """The new value of `column` (an UPDATE writes it without the ORM's compiler)."""
        if connection.vendor == "postgresql":
            return f"({column} || %s::jsonb)", [json.dumps(self.items)]
        if connection.vendor == "sqlite":
            pairs = ", ".join(["'$[#]', json(%s)"] * len(self.items))
            return f"json_insert({column}, {pairs})", list(map(json.dumps, self.items))
        raise NotSupportedError(f"appending to JSON on {connection.vendor}")


# What a step's agent checks before every turn (`_halt`): compiled once per connection.
_HALT_READ = PreparedRead(
    "step_halt",
    lambda step_id: (
        Step.objects.filter(pk=step_id)
        .select_related("run")
        .only("status", "run__status", "run__paused_at")
    ),
)


class AgentSession(ToolCalls, Pauses):
    """One attempt of an agent over its stored conversation.

    The tool calls of a reply are answered by `ToolCalls`; pausing for a person and resuming
    from a recorded call are `Pauses`. Both are parts of this class, split by job.
    """

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
        final_read: Ahead | None = None,
        releases=None,
        integrated: Callable | None = None,
    ):
        """`on_final(run, outcome)` runs inside the transaction that records the final reply
        (the run is locked), so the caller's next transition costs no extra transaction; its
        return value is kept in `final_result`. `final_read`: what `on_final` reads first,
        sent with the run's lock (see `locked_run`)."""
        self.on_final = on_final
        self.final_read = final_read
        self.final_result: object = None
        # The run's state as a `recording` just saw it (see `_halt`), or None.
        self._seen: Run | None = None
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
                self.host.before_final(outcome)
                with locked_run(self.agent_run.run_id, then=self.final_read) as run:
                    self.final_result = self.on_final(run, outcome)
            return outcome

    def run_turn(self) -> TurnOutcome:
        # A fresh attempt was claimed a moment ago under the run lock; later turns re-check.
        fresh = self.agent_run.turns == 0 and len(self.messages) == 2
        halt = None if fresh else self._halt()
        if halt == "stopped":
            return Failed("the run was stopped", cancelled=True)
        pending = self._unanswered_tool_calls()
        if pending:
            return self._handle_tool_calls(pending, resumed=True)
        if halt == "paused":
            return Paused()
        if self.agent_run.turns >= self.turn_limit:
            return Failed(f"turn limit of {self.turn_limit} reached without a final answer")
        hold = self.host.before_model_call()
        if hold.stop:
            return Failed(hold.stop)
        if hold.checkpoint_id is not None:
            return NeedsApproval(hold.checkpoint_id)
        try:
            reply, record = self._call_model()
        except ModelError as exc:
            return Failed(f"model call failed: {exc}")
        final = self._plain_final(reply)
        if final is not None:
            self.host.before_final(final)  # e.g. the step's commit: git, before the transaction
        # Only a final answer moves the step on and needs the run's state under its lock; a
        # turn that goes on is recorded without holding the run.
        block = (
            locked_run(self.agent_run.run_id, then=self.final_read)
            if final is not None
            else self._recording()
        )
        with block as run:
            # The call, its usage, the reply appended to the conversation; a final reply
            # whose hook runs in this transaction closes the attempt in the same UPDATE.
            record(run, final if self.on_final is not None else None)
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

    def _append(self, message: dict, run: Run | None = None) -> None:
        """Append to the stored conversation; inside `run`'s block when given, after what the
        block appended before (see `update_later`)."""
        self.agent_run.messages.append(message)
        appended = Appended("messages", [message])
        if run is None:
            AgentRun.objects.filter(pk=self.agent_run.pk).update(messages=appended)
        else:
            update_later(run, AgentRun, self.agent_run.pk, messages=appended)

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

    def _halt(self) -> str | None:
        """Checked before every turn, in one query at most (none after a recorded call, whose
        record returned the run's state): "stopped" when the run ended or the step was
        cancelled, "paused" when a step's run was paused by hand (its reviewer, planner
        and reporter finish what they do), else None."""
        seen, self._seen = self._seen, None
        if seen is not None:
            # The run as the last record of the turn before saw it: no read. A step is
            # cancelled only with its run (`cancel_run`), so the run's status tells.
            run = seen
        elif self.step is None:
            ended = Run.objects.filter(pk=self.agent_run.run_id, status__in=Run.TERMINAL)
            return "stopped" if ended.exists() else None
        else:
            try:
                step = _HALT_READ.get(self.step.pk)
            except Step.DoesNotExist:
                return "stopped"
            if step.status == Step.Status.CANCELLED:
                return "stopped"
            run = step.run
        if run.status in Run.TERMINAL:
            return "stopped"
        if (
            self.step is not None
            and run.paused_at is not None
            and self.agent_run.purpose == AgentRun.Purpose.STEP
        ):
            return "paused"
        return None

    # --- model calls -----------------------------------------------------------------------
    def _tools_for_model(self) -> list[dict]:
        tools = [tool.as_openai() for tool in self.toolset.values()]
        if self.output_tool is not None:
            tools.append(self.output_tool.as_openai())
        return tools

    def _call_model(self) -> tuple[ModelReply, Callable[..., None]]:
        """Ask the model. Returns the reply and the function that records it inside the
        caller's `locked_run`; a failed call is recorded here, in its own transaction."""
        started_at = timezone.now()
        began = time.perf_counter()
        sent = len(self.messages)
        try:
            with slots.waiting():
                reply = self.client.complete(
                    model=self.agent_run.model,
                    messages=self.messages,
                    tools=self._tools_for_model(),
                    temperature=self.temperature,
                )
        except ModelError as exc:
            latency_ms = (time.perf_counter() - began) * 1000
            with recording(self.agent_run.run_id) as run:
                self._write_model_call(run, started_at, latency_ms, sent, None, error=str(exc))
            raise
        latency_ms = (time.perf_counter() - began) * 1000

        def record(run: Run, final: FinalOutput | None = None) -> None:
            self._write_model_call(run, started_at, latency_ms, sent, reply, final=final)

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
        self,
        run: Run,
        started_at,
        latency_ms: float,
        sent: int,
        reply: ModelReply | None,
        error="",
        final: FinalOutput | None = None,
    ) -> None:
        """Inside the caller's `locked_run`: the call, its usage on the attempt, step and run,
        the assistant message appended to the stored conversation, the `model.called` event;
        with `final`, the attempt closed (see `closing_fields`)."""
        model = (reply.fallback_model if reply else "") or self.agent_run.model
        input_tokens = reply.input_tokens if reply else 0
        output_tokens = reply.output_tokens if reply else 0
        cost, cost_known = priced(reply, model, input_tokens, output_tokens)
        served = {**served_by(reply, self.client), "cost_unknown": not cost_known}
        self.agent_run.turns += 1
        added = [reply.as_message()] if reply is not None else []
        self.agent_run.messages.extend(added)
        call = ModelCall(
            agent_run=self.agent_run,
            run_id=run.pk,
            model=model,
            **served,
            message_count=sent,
            response=reply.for_trace() if reply else {},
            tool_calls=[c.name for c in reply.tool_calls] if reply else [],
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            latency_ms=latency_ms,
            cost_usd=cost,
            error=error,
            started_at=started_at,
        )
        usage = {
            "input_tokens": Added("input_tokens", input_tokens),
            "output_tokens": Added("output_tokens", output_tokens),
            "cost_usd": Added("cost_usd", cost),
        }
        if added:
            usage["messages"] = Appended("messages", added)
        closed = closing_fields(final) if final is not None else {}
        update_later(
            run, AgentRun, self.agent_run.pk, turns=self.agent_run.turns, **usage, **closed
        )
        for field, value in closed.items():
            setattr(self.agent_run, field, value)
        add_usage(run, input_tokens, output_tokens, cost)
        self.host.record_usage(run, input_tokens, output_tokens, cost)
        event = emit(
            run,
            "model.called",
            step=self.step,
            actor=self.agent_run.role,
            data={
                "model_call": None,  # its id, once written
                "agent_run": self.agent_run.pk,
                "purpose": self.agent_run.purpose,
                "model": model,
                "provider": served["provider"],
                "usage_estimated": served["usage_estimated"],
                "cost_unknown": served["cost_unknown"],
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "cost_usd": str(cost),
                "latency_ms": round(latency_ms, 1),
                "tool_calls": call.tool_calls,
                "error": error,
            },
        )
        insert_later(run, call, event, "model_call")
