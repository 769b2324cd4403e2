"""Tool calls: check, gate, run and record each call of a reply, and answer the model.

`ToolCalls` is a part of `AgentSession` (see `agents.loop.session`) and uses its state: the
agent run, the step, the host, the toolset and the output tool.
"""

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager

from django.utils import timezone

from agents.llm.base import ToolRequest
from agents.loop.outcomes import (
    SIDE_EFFECTS,
    Failed,
    FinalOutput,
    Outcome,
    RunAgain,
    TurnOutcome,
)
from agents.models import ToolCall
from agents.tools import Risk, Tool, ToolContext, ToolError, patch_paths, schema_errors
from orchestra import slots
from orchestra.events import emit, recording
from orchestra.models import Event, Run
from orchestra.writes import insert_later

# The loop's one logger, whichever of its parts logs.
logger = logging.getLogger("agents.loop")


class ToolCalls:
    # --- tool calls ------------------------------------------------------------------------
    def _handle_tool_calls(
        self, calls: list[tuple[int, ToolRequest]], *, resumed: bool
    ) -> TurnOutcome:
        """Answer the calls in order. Only calls found unanswered in a stored conversation
        (`resumed`) can have a record already; a reply just received cannot, since a call's
        record and its answer are written in one transaction."""
        self._seen = None  # the tools may take long: only what their records see counts
        for ordinal, request in calls:
            outcome = self._handle_tool_call(ordinal, request, resumed=resumed)
            if outcome is not None:
                return outcome
        return RunAgain()

    @contextmanager
    def _recording(self) -> Iterator[Run]:
        """`recording` for this agent's run; the run's state that the block's last statement
        saw is kept for the next turn's check (`_halt`), which then reads nothing."""
        with recording(self.agent_run.run_id) as run:
            yield run
        self._seen = run if run.state_seen else None

    def _idempotency_key(self, ordinal: int) -> str:
        agent_run = self.agent_run
        where = self.step.key if self.step else agent_run.purpose
        return f"{agent_run.run_id}:{where}:{agent_run.purpose}:{agent_run.attempt}:{ordinal}"

    def _answer(self, request: ToolRequest, content: str, run: Run | None = None) -> None:
        self._append({"role": "tool", "tool_call_id": request.id, "content": content}, run)

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

    def _tool_context(self, key: str, approved_commit: str = "") -> ToolContext:
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
            network=project.sandbox_network,
            releases=self.releases,
            integrated=self.integrated,
            approved_commit=approved_commit,
        )

    def _run_tool(
        self, tool: Tool, arguments: dict, key: str, approved_commit: str = ""
    ) -> tuple[str, str]:
        """Run the tool; returns (status, result text). Tool failures go to the model."""
        context = self._tool_context(key, approved_commit)
        try:
            return ToolCall.Status.SUCCEEDED, tool.func(context, arguments)
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
            with self._recording() as run:
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
            with slots.waiting():
                self._run_side_effect(call, request, tool, arguments)
            return
        status, result = self._run_tool(tool, arguments, key)
        touched = []
        if tool.risk == Risk.WRITE and status == ToolCall.Status.SUCCEEDED:
            touched = self._touched_paths(tool, arguments)
        self._finish_call(
            key, request, tool, arguments, status, result, started_at=started_at, touched=touched
        )

    def _touched_paths(self, tool: Tool, arguments: dict) -> list[str]:
        """The paths a successful write changed: the step's lease widens to them, recorded
        with the call (see `Host.touched`)."""
        paths = patch_paths(arguments["patch"]) if tool.name == "apply_patch" else []
        paths = paths or [arguments.get("path", "")]
        return [p for p in paths if p]

    def _run_side_effect(
        self,
        call: ToolCall,
        request: ToolRequest,
        tool: Tool,
        arguments: dict,
        note: str = "",
        approved_commit: str = "",
    ) -> None:
        """Run a recorded call (status `running` in the database) and record its result."""
        status, result = self._run_tool(tool, arguments, call.idempotency_key, approved_commit)
        self._record_result(call, request, status, note + result, arguments)

    def _record_result(
        self, call: ToolCall, request: ToolRequest, status: str, result: str, arguments: dict
    ) -> None:
        with self._recording() as run:
            ToolCall.objects.filter(pk=call.pk).update(
                status=status, result=result, arguments=arguments, finished_at=timezone.now()
            )
            call.status, call.result, call.arguments = status, result, arguments
            self._emit_tool_called(run, call)
            self._answer(request, result, run)

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
        touched: list[str] | None = None,
    ) -> None:
        """Record a finished tool call, emit `tool.called`, and hand the result to the model:
        inside the caller's transaction when `run` is given, else in one of its own that reads
        no run state (`recording`)."""
        if run is None:
            with self._recording() as locked:
                self._finish_call(
                    key,
                    request,
                    tool,
                    arguments,
                    status,
                    result,
                    started_at=started_at,
                    run=locked,
                    touched=touched,
                )
            return
        if touched:
            self.host.touched(run, touched)
        now = timezone.now()
        call = self._tool_call(
            run, key, request, tool, arguments, status, result, started_at or now, now
        )
        # The call, its event and its answer in one statement on PostgreSQL (`insert_later`).
        insert_later(run, call, self._emit_tool_called(run, call), "tool_call")
        self._answer(request, result, run)

    def _new_tool_call(self, run: Run, *args) -> ToolCall:
        """A call recorded now: its id is needed before the transaction ends."""
        call = self._tool_call(run, *args)
        call.save(force_insert=True)
        return call

    def _tool_call(
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
        return ToolCall(
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

    def _emit_tool_called(self, run: Run, call: ToolCall) -> Event:
        return emit(
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
