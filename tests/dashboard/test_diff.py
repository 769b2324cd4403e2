"""File-write checkpoints show the unified diff they would make: on the approval page and in
the step's checkpoint list, added lines green and removed lines red, each keeping its sign."""

import pytest
from django.utils.html import escape

from agents import workspace as git
from approvals.models import Checkpoint, PolicyRule
from orchestra.dashboard.templatetags.diffs import diff_lines
from orchestra.engine import start_run
from orchestra.engine.workspaces import repository_for

from .conftest import client_for

pytestmark = pytest.mark.django_db(transaction=True)

# A removed line that reads "--- ..." and an added one that reads "+++ ...": inside a hunk
# they are content, not file headers.
DIFF = """--- a/src/greeting.py
+++ b/src/greeting.py
@@ -1,3 +1,4 @@
 def greet(name):
-    return "Hi " + name
---- an old divider
+    return f"Hello, {name}!"
+++ a new divider
+# <b>not bold</b>
"""
ADDED = ['+    return f"Hello, {name}!"', "+++ a new divider", "+# <b>not bold</b>"]
REMOVED = ['-    return "Hi " + name', "---- an old divider"]


def line(kind: str, text: str) -> str:
    return f'<span class="diff-line diff-{kind}">{escape(text)}</span>'


@pytest.fixture
def write_checkpoint(checkpoint) -> Checkpoint:
    """The demo run's pending checkpoint, made to ask for a file write with a diff."""
    checkpoint.shown = {
        **checkpoint.shown,
        "tool": "write_file",
        "arguments": {"path": "src/greeting.py", "content": "def greet(name): ..."},
        "diff": DIFF,
    }
    checkpoint.save(update_fields=["shown"])
    return checkpoint


def test_diff_lines_know_headers_hunks_and_content():
    kinds = [(d.kind, d.text) for d in diff_lines(DIFF + "\\ No newline at end of file\n")]
    assert kinds == [
        ("file", "--- a/src/greeting.py"),
        ("file", "+++ b/src/greeting.py"),
        ("hunk", "@@ -1,3 +1,4 @@"),
        ("ctx", " def greet(name):"),
        ("del", REMOVED[0]),
        ("del", REMOVED[1]),
        ("add", ADDED[0]),
        ("add", ADDED[1]),
        ("add", ADDED[2]),
        ("note", "\\ No newline at end of file"),
    ]
    assert [d.kind for d in diff_lines("(no diff: outside the workspace)")] == ["note"]
    assert diff_lines("") == []


def test_the_approval_page_shows_the_proposed_change(write_checkpoint, approver):
    page = client_for(approver).get(f"/approvals/{write_checkpoint.pk}/").text
    assert "Proposed change to <code>src/greeting.py</code>" in page
    for text in ADDED:
        assert line("add", text) in page, text
    for text in REMOVED:
        assert line("del", text) in page, text
    assert line("file", "--- a/src/greeting.py") in page
    assert line("hunk", "@@ -1,3 +1,4 @@") in page
    assert line("ctx", " def greet(name):") in page
    assert "<b>not bold</b>" not in page  # autoescaped
    # The change comes before the raw arguments it was computed from.
    assert page.index('id="proposed-change"') < page.index('id="shown-arguments"')


def test_the_step_page_lists_the_change_with_its_checkpoint(write_checkpoint, owner):
    page = client_for(owner).get(f"/runs/{write_checkpoint.run_id}/steps/verify/").text
    checkpoints = page.split('id="checkpoints-title"')[1]
    assert "<summary>Proposed change to <code>src/greeting.py</code></summary>" in checkpoints
    assert '<details class="plain" open>' in checkpoints  # pending: shown unfolded
    for text in ADDED:
        assert line("add", text) in checkpoints, text
    for text in REMOVED:
        assert line("del", text) in checkpoints, text


def test_an_empty_diff_says_so_and_other_checkpoints_show_none(checkpoint, owner):
    client = client_for(owner)
    assert "Proposed change" not in client.get(f"/approvals/{checkpoint.pk}/").text
    checkpoint.shown = {**checkpoint.shown, "diff": ""}
    checkpoint.save(update_fields=["shown"])
    page = client.get(f"/approvals/{checkpoint.pk}/").text
    assert "Proposed change" in page
    assert "The diff is empty: writing this file would change nothing." in page


def test_the_engines_diff_of_a_gated_write_renders(demo, owner):
    """End to end: the diff the agent loop records for a gated write_file, as shown."""
    PolicyRule.objects.create(project=demo, position=1, risk="write", outcome="require_approval")
    repo = repository_for(demo)
    (repo / "notes").mkdir(parents=True, exist_ok=True)
    (repo / "notes" / "research.md").write_text("# Old notes\n")
    git.commit_all(repo, "Old notes")
    run = start_run(owner, demo, "Gate the writes")
    checkpoint = Checkpoint.objects.get(run=run, status=Checkpoint.Status.PENDING)
    page = client_for(owner).get(f"/approvals/{checkpoint.pk}/").text
    assert "Proposed change to <code>notes/research.md</code>" in page
    assert line("file", "--- a/notes/research.md") in page
    assert line("del", "-# Old notes") in page
    assert line("add", "+# Research") in page
