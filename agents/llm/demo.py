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
from agents.llm.demo_subject import GREETING, Subject, subject_in, subject_of


def software_plan(subject: Subject) -> list[dict]:
    """The software plan, named after the task's subject."""
    return [
        {
            "key": "research",
            "title": "Survey the workspace and note the conventions",
            "agent": "researcher",
            "brief": {
                "objective": "List the workspace files and record the conventions a change to "
                f"{subject.source} must follow.",
                "expected_output": "A short note in notes/research.md and a summary.",
                "acceptance_criteria": ["The note exists", "It names the files to change"],
            },
            "claims": ["notes/research.md"],
        },
        {
            "key": "implement",
            "title": f"Implement the {subject.module.replace('_', ' ')} module",
            "agent": "coder",
            "depends_on": ["research"],
            "brief": {
                "objective": f"Write {subject.source} with a {subject.function}(name) function.",
                "expected_output": "The module and a one-paragraph summary.",
                "constraints": [f"Only touch {subject.source}"],
                "acceptance_criteria": [
                    f"{subject.function}('Ada') returns '{subject.phrase}, Ada!'",
                    "It has a docstring",
                ],
            },
            "claims": [subject.source],
        },
        {
            "key": "tests",
            "title": "Write the tests",
            "agent": "coder",
            "depends_on": ["research"],
            "brief": {
                "objective": f"Write {subject.test} covering {subject.function}().",
                "expected_output": "The test module.",
                "constraints": [f"Only touch {subject.test}"],
                "acceptance_criteria": ["The tests cover a normal and an empty name"],
            },
            "claims": [subject.test],
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


SOFTWARE_PLAN = software_plan(GREETING)

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


def module_source(subject: Subject, *, revised: bool) -> str:
    """The module a coder writes: a first draft, then the one its reviewer asked for."""
    if subject.is_greeting:
        return GREETING_V2 if revised else GREETING_V1
    fn, phrase = subject.function, subject.phrase
    if not revised:
        return f'def {fn}(name):\n    return f"{phrase}, {{name}}!"\n'
    return (
        f'"""{phrase} for the demo project."""\n\n\n'
        f"def {fn}(name: str) -> str:\n"
        f'    """{phrase} for `name`; an empty name addresses the world."""\n'
        f"    return f\"{phrase}, {{name or 'world'}}!\"\n"
    )


def unit_tests_for(subject: Subject) -> str:
    if subject.is_greeting:
        return GREETING_TESTS
    fn, phrase = subject.function, subject.phrase
    case = "".join(part.capitalize() for part in subject.module.split("_"))
    return (
        "import sys\nimport unittest\n\nsys.path.insert(0, 'src')\n\n"
        f"from {subject.module} import {fn}  # noqa: E402\n\n\n"
        f"class {case}Test(unittest.TestCase):\n"
        f"    def test_name(self):\n        self.assertEqual({fn}('Ada'), '{phrase}, Ada!')\n\n"
        f"    def test_empty(self):\n        self.assertEqual({fn}(''), '{phrase}, world!')\n\n\n"
        "if __name__ == '__main__':\n    unittest.main()\n"
    )


TASK = re.compile(r"^Task: (?P<title>.*)$", re.M)
DESCRIPTION = re.compile(r"^Description:\n(?P<text>.*?)\n\n", re.M | re.S)
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
        title = TASK.search(first_user)
        description = DESCRIPTION.search(first_user)
        subject = subject_of(
            title["title"] if title else "", description["text"] if description else ""
        )
        if team == "content":
            summary, steps = "Demo plan for the content team.", CONTENT_PLAN
        else:
            summary = f"Demo plan for the software team: {subject.source} and its test."
            steps = software_plan(subject)
        plan = {"summary": summary, "steps": steps}
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
        subject = subject_in(first_user)
        if (
            f"Step implement — Implement the {subject.module.replace('_', ' ')} module"
            in first_user
        ):
            lines += [
                "",
                f"`{subject.source}` now has `{subject.function}(name)`, covered by "
                f"`{subject.test}`.",
            ]
        return "\n".join(lines), []

    # --- the reviewer ----------------------------------------------------------------------
    def _review(self, first_user: str):
        match = REVIEW_KEY.search(first_user)
        key = match["key"] if match else ""
        attempt_match = ATTEMPT.search(first_user)
        attempt = int(attempt_match["n"]) if attempt_match else 1
        if key == "implement" and attempt == 1:
            subject = subject_in(first_user)
            answer = "greet the world" if subject.is_greeting else "address the world"
            verdict = {
                "verdict": "revise",
                "feedback": f"Add a module docstring and {answer} when the name is empty.",
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
        script = self._script(key, revising, subject_in(first_user))
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

    def _script(self, key: str, revising: bool, subject: Subject) -> list[tuple[str, dict]]:
        scripts: dict[str, list[tuple[str, dict]]] = {
            "research": [
                ("list_files", {}),
                (
                    "write_file",
                    {
                        "path": "notes/research.md",
                        "content": f"# Research\n\nChange {subject.source} and "
                        f"{subject.test}; tests use unittest.\n",
                    },
                ),
            ],
            "implement": [
                (
                    "write_file",
                    {
                        "path": subject.source,
                        "content": module_source(subject, revised=revising),
                    },
                )
            ],
            "tests": [("write_file", {"path": subject.test, "content": unit_tests_for(subject)})],
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
