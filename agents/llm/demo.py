"""The built-in demo model: deterministic, offline, and clearly labelled as the demo.

It answers through the same ModelClient interface as a real endpoint, so a demo run goes
through exactly the engine code a real run does: it plans through `submit_plan`, calls real
tools (a write, a gated command, a gated deploy), gets one step sent back for revision by its
reviewer, and writes a report. It reads only the conversation it is sent.
"""

import json
import re
import time

from agents.llm.base import ModelReply, ToolRequest

SOFTWARE_PLAN = [
    {
        "key": "research",
        "title": "Survey the workspace and note the conventions",
        "agent": "researcher",
        "brief": {
            "objective": "List the workspace files and record the conventions the change "
            "must follow.",
            "expected_output": "A short note in notes/research.md and a summary.",
            "acceptance_criteria": ["The note exists", "It names the files to change"],
        },
        "claims": ["notes/research.md"],
    },
    {
        "key": "implement",
        "title": "Implement the greeting module",
        "agent": "coder",
        "depends_on": ["research"],
        "brief": {
            "objective": "Write src/greeting.py with a greet(name) function.",
            "expected_output": "The module and a one-paragraph summary.",
            "constraints": ["Only touch src/greeting.py"],
            "acceptance_criteria": ["greet('Ada') returns 'Hello, Ada!'", "It has a docstring"],
        },
        "claims": ["src/greeting.py"],
    },
    {
        "key": "tests",
        "title": "Write the tests",
        "agent": "coder",
        "depends_on": ["research"],
        "brief": {
            "objective": "Write tests/test_greeting.py covering greet().",
            "expected_output": "The test module.",
            "constraints": ["Only touch tests/test_greeting.py"],
            "acceptance_criteria": ["The tests cover a normal and an empty name"],
        },
        "claims": ["tests/test_greeting.py"],
    },
    {
        "key": "verify",
        "title": "Run the test suite",
        "agent": "coder",
        "depends_on": ["implement", "tests"],
        "brief": {
            "objective": "Check that the code compiles, run the tests and report the result.",
            "expected_output": "The test command's outcome.",
            "acceptance_criteria": ["The tests were run"],
            "checks": ["tests"],
        },
    },
    {
        "key": "deploy",
        "title": "Deploy to the demo environment",
        "agent": "deployer",
        "depends_on": ["verify"],
        "brief": {
            "objective": "Deploy the verified workspace to the `demo` environment.",
            "expected_output": "The release that was made.",
            "acceptance_criteria": ["A release exists in the demo environment"],
        },
        "claims": ["environment:demo"],
    },
]

CONTENT_PLAN = [
    {
        "key": "research-sources",
        "title": "Collect sources",
        "agent": "researcher",
        "brief": {
            "objective": "Collect the key facts and their sources.",
            "expected_output": "Notes in notes/sources.md.",
            "acceptance_criteria": ["At least three facts with sources"],
        },
        "claims": ["notes/sources.md"],
    },
    {
        "key": "research-audience",
        "title": "Profile the audience",
        "agent": "researcher",
        "brief": {
            "objective": "Describe who will read the piece and what they need.",
            "expected_output": "Notes in notes/audience.md.",
            "acceptance_criteria": ["Names the audience and its questions"],
        },
        "claims": ["notes/audience.md"],
    },
    {
        "key": "write",
        "title": "Write the draft",
        "agent": "writer",
        "depends_on": ["research-sources", "research-audience"],
        "brief": {
            "objective": "Draft the piece from both research notes.",
            "expected_output": "draft.md",
            "acceptance_criteria": ["Uses the facts", "Addresses the audience"],
        },
        "claims": ["draft.md"],
    },
    {
        "key": "edit",
        "title": "Edit the draft",
        "agent": "editor",
        "depends_on": ["write"],
        "brief": {
            "objective": "Tighten and correct the draft.",
            "expected_output": "edited.md",
            "acceptance_criteria": ["No factual changes without a source"],
        },
        "claims": ["edited.md"],
    },
    {
        "key": "format",
        "title": "Format for publication",
        "agent": "formatter",
        "depends_on": ["edit"],
        "brief": {
            "objective": "Produce the final HTML.",
            "expected_output": "final.html",
            "acceptance_criteria": ["Valid HTML with a title"],
        },
        "claims": ["final.html"],
    },
]

GREETING_V1 = 'def greet(name):\n    return f"Hello, {name}!"\n'
GREETING_V2 = (
    '"""Greetings for the demo project."""\n\n\n'
    "def greet(name: str) -> str:\n"
    '    """Greet `name`; an empty name greets the world."""\n'
    "    return f\"Hello, {name or 'world'}!\"\n"
)
GREETING_TESTS = (
    "import sys\nimport unittest\n\nsys.path.insert(0, 'src')\n\n"
    "from greeting import greet  # noqa: E402\n\n\n"
    "class GreetTest(unittest.TestCase):\n"
    "    def test_name(self):\n        self.assertEqual(greet('Ada'), 'Hello, Ada!')\n\n"
    "    def test_empty(self):\n        self.assertEqual(greet(''), 'Hello, world!')\n\n\n"
    "if __name__ == '__main__':\n    unittest.main()\n"
)

STEP_KEY = re.compile(r"^Step: (?P<key>[a-z0-9_-]+) — ", re.M)
REVIEW_KEY = re.compile(r"^Review the output of step (?P<key>[a-z0-9_-]+) — ", re.M)
ATTEMPT = re.compile(r"^Output \(attempt (?P<n>\d+)\):", re.M)


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)


class DemoModel:
    endpoint = "demo"

    def __init__(self, latency: float = 0.0):
        self.latency = latency

    def complete(
        self, *, model: str, messages: list[dict], tools: list[dict], temperature: float
    ) -> ModelReply:
        if self.latency:
            time.sleep(self.latency)
        tool_names = {t["function"]["name"] for t in tools}
        first_user = next((m["content"] for m in messages if m["role"] == "user"), "")
        if "submit_plan" in tool_names:
            reply = self._plan(messages, first_user)
        elif "submit_verdict" in tool_names:
            reply = self._review(first_user)
        elif first_user.startswith("Write the final report"):
            reply = self._report(first_user)
        else:
            reply = self._step(messages, first_user)
        content, calls = reply
        prompt_text = sum(len(str(m.get("content") or "")) for m in messages)
        return ModelReply(
            content=content,
            tool_calls=calls,
            input_tokens=max(1, prompt_text // 4),
            output_tokens=_tokens((content or "") + "".join(c.arguments for c in calls)),
            model="demo",
            finish_reason="tool_calls" if calls else "stop",
        )

    # --- the orchestrator ----------------------------------------------------------------
    def _plan(self, messages: list[dict], first_user: str):
        team = "content" if "(team: content)" in first_user else "software"
        plan = {
            "summary": "Demo plan for the " + team + " team.",
            "steps": CONTENT_PLAN if team == "content" else SOFTWARE_PLAN,
        }
        attempt = sum(1 for m in messages if m["role"] == "assistant") + 1
        return (
            f"Planning the {team} task.",
            [ToolRequest(f"call_plan_{attempt}", "submit_plan", json.dumps(plan))],
        )

    def _report(self, first_user: str):
        steps = re.findall(r"^Step (?P<key>[a-z0-9_-]+) — (?P<title>.+):$", first_user, re.M)
        task = first_user.splitlines()[0].removeprefix("Write the final report for the task: ")
        lines = [f"# Report: {task}", "", "Produced by the demo model.", ""]
        lines += [f"- **{key}** — {title}: done and reviewed." for key, title in steps]
        return "\n".join(lines), []

    # --- the reviewer ----------------------------------------------------------------------
    def _review(self, first_user: str):
        match = REVIEW_KEY.search(first_user)
        key = match["key"] if match else ""
        attempt_match = ATTEMPT.search(first_user)
        attempt = int(attempt_match["n"]) if attempt_match else 1
        if key == "implement" and attempt == 1:
            verdict = {
                "verdict": "revise",
                "feedback": "Add a module docstring and greet the world when the name is empty.",
                "criteria": [{"criterion": "It has a docstring", "met": False}],
            }
        else:
            verdict = {"verdict": "pass", "feedback": "Meets the acceptance criteria."}
        return (
            f"Reviewed {key}.",
            [ToolRequest(f"call_verdict_{key}_{attempt}", "submit_verdict", json.dumps(verdict))],
        )

    # --- the specialists -------------------------------------------------------------------
    def _step(self, messages: list[dict], first_user: str):
        match = STEP_KEY.search(first_user)
        key = match["key"] if match else "step"
        revising = "Reviewer feedback to address" in first_user
        results = [m["content"] for m in messages if m["role"] == "tool"]
        script = self._script(key, revising)
        if len(results) < len(script):
            name, arguments = script[len(results)]
            call = ToolRequest(f"call_{key}_{len(results) + 1}", name, json.dumps(arguments))
            return (f"Next I call {name} for step {key}.", [call])
        last = results[-1] if results else ""
        rejected = next((r for r in results if r.startswith("rejected by")), None)
        if rejected:
            return (
                f"Step {key}: a human rejected my request ({rejected}). I did not run it and "
                "leave the decision to the reviewer.",
                [],
            )
        summary = f"Step {key} done" + (" (revised after review)" if revising else "") + "."
        if last:
            summary += f"\nLast tool result:\n{last[:400]}"
        return summary, []

    def _script(self, key: str, revising: bool) -> list[tuple[str, dict]]:
        scripts: dict[str, list[tuple[str, dict]]] = {
            "research": [
                ("list_files", {}),
                (
                    "write_file",
                    {
                        "path": "notes/research.md",
                        "content": "# Research\n\nChange src/greeting.py and "
                        "tests/test_greeting.py; tests use unittest.\n",
                    },
                ),
            ],
            "implement": [
                (
                    "write_file",
                    {
                        "path": "src/greeting.py",
                        "content": GREETING_V2 if revising else GREETING_V1,
                    },
                )
            ],
            "tests": [
                ("write_file", {"path": "tests/test_greeting.py", "content": GREETING_TESTS})
            ],
            "verify": [
                ("run_command", {"command": "python3 -m compileall -q src tests"}),
                ("run_tests", {}),
            ],
            "deploy": [("deploy", {"environment": "demo", "note": "Demo release"})],
        }
        content_files = {
            "research-sources": "notes/sources.md",
            "research-audience": "notes/audience.md",
            "write": "draft.md",
            "edit": "edited.md",
            "format": "final.html",
        }
        if key in content_files:
            body = f"Demo content for the {key} step.\n"
            return [("write_file", {"path": content_files[key], "content": body})]
        return scripts.get(key, [])
