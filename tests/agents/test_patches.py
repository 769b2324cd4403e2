"""What a patch touches, as git reads it: every header form git accepts is classified the
way git classifies it, symbolic links and submodules are refused in every form, and the
approval policy's "within the step's claims" rule sees the same paths git will write."""

import os
import subprocess
from pathlib import Path

import pytest

from agents.tools import REGISTRY, ToolContext, ToolError, patch_paths
from agents.tools.patches import patch_summary
from approvals.policies import Call, evaluate

GIT_ENV = {
    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    "LANG": "C.UTF-8",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.test",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.test",
}


def git(folder: Path, *arguments: str, stdin: bytes = b"") -> bytes:
    env = GIT_ENV | {"HOME": str(folder), "GIT_CEILING_DIRECTORIES": str(folder.parent)}
    return subprocess.run(
        ["git", *arguments], cwd=folder, env=env, input=stdin, capture_output=True, check=True
    ).stdout


def numstat_names(folder: Path, patch: str, *extra: str) -> set[str]:
    output = git(folder, "apply", "--numstat", "-z", *extra, stdin=patch.encode())
    return {record.split(b"\t", 2)[2].decode() for record in output.split(b"\0") if record}


def gits_answer(tmp_path: Path, patch: str) -> set[str]:
    """Every path git reads the patch to touch: read forwards, a file's new name (or the old
    one of a deleted file); read in reverse, its old name (or the new one of a created
    file)."""
    folder = tmp_path / "empty"
    folder.mkdir()
    return numstat_names(folder, patch) | numstat_names(folder, patch, "-R")


def written_by_git(tmp_path: Path, files: dict[str, str], patch: str) -> set[str]:
    """The paths that differ after git applies the patch in a repository holding `files`."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    for name, content in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(content)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "before", "--allow-empty")
    git(repo, "apply", stdin=patch.encode())
    status = git(repo, "status", "--porcelain", "-z", "--untracked-files=all", "--no-renames")
    return {entry[3:].decode() for entry in status.split(b"\0") if entry}


MODIFY = """\
diff --git a/src/app.py b/src/app.py
index 1234567..89abcde 100644
--- a/src/app.py
+++ b/src/app.py
@@ -1,2 +1,2 @@
 def greet():
-    return 'hello'
+    return 'hello, world'
"""

# name -> (files before, patch, paths in order of first mention)
ACCEPTED = {
    "modification": ({"src/app.py": "def greet():\n    return 'hello'\n"}, MODIFY, ["src/app.py"]),
    "rename from/to": (
        {"src/app.py": "x\n"},
        "diff --git a/src/app.py b/src/backdoor.py\nsimilarity index 100%\n"
        "rename from src/app.py\nrename to src/backdoor.py\n",
        ["src/app.py", "src/backdoor.py"],
    ),
    "rename old/new": (
        {"src/app.py": "x\n"},
        "diff --git a/src/app.py b/src/backdoor.py\nsimilarity index 100%\n"
        "rename old src/app.py\nrename new src/backdoor.py\n",
        ["src/app.py", "src/backdoor.py"],
    ),
    "---/+++ names that differ, no rename header": (
        {"src/app.py": "x\n"},
        "diff --git a/src/app.py b/src/app.py\n--- a/src/app.py\n+++ b/src/backdoor.py\n"
        "@@ -1 +1 @@\n-x\n+y\n",
        ["src/backdoor.py", "src/app.py"],
    ),
    "traditional names that differ": (  # git picks one name and patches that file
        {"src/backdoor.py": "x\n"},
        "--- a/src/app.py\n+++ b/src/backdoor.py\n@@ -1 +1 @@\n-x\n+y\n",
        ["src/backdoor.py"],
    ),
    "rename with a hunk": (
        {"old.sql": "-- a/not-a-header\nselect 1;\n"},
        "diff --git a/old.sql b/new.sql\nsimilarity index 50%\nrename from old.sql\n"
        "rename to new.sql\n--- a/old.sql\n+++ b/new.sql\n@@ -1,2 +1,1 @@\n"
        "--- a/not-a-header\n select 1;\n",
        ["old.sql", "new.sql"],
    ),
    "rename into another folder": (
        {"src/a.py": "x\n"},
        "diff --git a/src/a.py b/src/deep/er/b.py\nsimilarity index 100%\n"
        "rename from src/a.py\nrename to src/deep/er/b.py\n",
        ["src/a.py", "src/deep/er/b.py"],
    ),
    "copy from/to": (
        {"lib/a.py": "x\n"},
        "diff --git a/lib/a.py b/lib/b.py\nsimilarity index 100%\ncopy from lib/a.py\n"
        "copy to lib/b.py\n",
        ["lib/a.py", "lib/b.py"],
    ),
    "quoted names with escapes and spaces": (
        {"my dir/a b.txt": "x\n"},
        'diff --git "a/my dir/a b.txt" "b/my dir/n\\303\\251w\\tname.txt"\n'
        "similarity index 100%\n"
        'rename from "my dir/a b.txt"\nrename to "my dir/n\\303\\251w\\tname.txt"\n',
        ["my dir/a b.txt", "my dir/néw\tname.txt"],
    ),
    "quoted modification": (
        {'we"ird.txt': "a\n"},
        'diff --git "a/we\\"ird.txt" "b/we\\"ird.txt"\n--- "a/we\\"ird.txt"\n'
        '+++ "b/we\\"ird.txt"\n@@ -1 +1 @@\n-a\n+b\n',
        ['we"ird.txt'],
    ),
    "---/+++ only, no diff --git": (
        {"src/app.py": "a\n", "b.md": "b\n"},
        "--- a/src/app.py\t2024-01-01 00:00:00\n+++ b/src/app.py\t2024-01-02 00:00:00\n"
        "@@ -1 +1 @@\n-a\n+A\n--- docs/b.md\n+++ docs/b.md\n@@ -1 +1 @@\n-b\n+B\n",
        ["src/app.py", "b.md"],  # git drops the first folder, a/ or not
    ),
    "creation and deletion from /dev/null": (
        {"gone.txt": "bye\n"},
        "--- /dev/null\n+++ b/made.txt\n@@ -0,0 +1 @@\n+hi\n"
        "--- a/gone.txt\n+++ /dev/null\n@@ -1 +0,0 @@\n-bye\n",
        ["made.txt", "gone.txt"],
    ),
    "git creation and deletion": (
        {"gone.txt": "bye\n"},
        "diff --git a/made.txt b/made.txt\nnew file mode 100644\nindex 0000000..45b983b\n"
        "--- /dev/null\n+++ b/made.txt\n@@ -0,0 +1 @@\n+hi\n"
        "diff --git a/gone.txt b/gone.txt\ndeleted file mode 100644\nindex b023018..0000000\n"
        "--- a/gone.txt\n+++ /dev/null\n@@ -1 +0,0 @@\n-bye\n",
        ["made.txt", "gone.txt"],
    ),
    "mode change": (
        {"run.sh": "echo\n"},
        "diff --git a/run.sh b/run.sh\nold mode 100644\nnew mode 100755\n",
        ["run.sh"],
    ),
}


@pytest.mark.parametrize("name", ACCEPTED)
def test_patch_paths_are_the_paths_git_reads(tmp_path, name):
    files, patch, expected = ACCEPTED[name]
    paths = patch_paths(patch)
    assert paths == expected
    assert set(paths) == gits_answer(tmp_path, patch)
    written = written_by_git(tmp_path, files, patch)
    assert written and written <= set(paths)
    if "copy" not in name:  # a copy's source is read, not written
        assert written == set(paths)


def test_the_summary_tells_renames_copies_creations_deletions_and_modes():
    patch = "".join(
        ACCEPTED[name][1]
        for name in ("rename old/new", "copy from/to", "git creation and deletion", "mode change")
    )
    summary = patch_summary(patch)
    assert summary.renames == (("src/app.py", "src/backdoor.py"),)
    assert summary.copies == (("lib/a.py", "lib/b.py"),)
    assert summary.created == ("made.txt",)
    assert summary.deleted == ("gone.txt",)
    assert summary.modes == {"made.txt": "100644", "gone.txt": "100644", "run.sh": "100755"}
    assert summary.paths == (
        "src/app.py",
        "src/backdoor.py",
        "lib/a.py",
        "lib/b.py",
        "made.txt",
        "gone.txt",
        "run.sh",
    )


def test_a_binary_patch_is_classified_as_git_classifies_it(tmp_path):
    repo = tmp_path / "made"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "logo.bin").write_bytes(bytes(range(256)) * 4)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "one")
    (repo / "logo.bin").write_bytes(bytes(range(256)) * 4 + b"\0more")
    (repo / "img").mkdir()
    git(repo, "mv", "logo.bin", "img/logo.bin")
    git(repo, "commit", "-qam", "two")
    patch = git(repo, "diff", "--binary", "-M10%", "HEAD~", "HEAD").decode()
    assert "GIT binary patch" in patch

    summary = patch_summary(patch)
    assert summary.binary == ("img/logo.bin",)
    assert summary.renames == (("logo.bin", "img/logo.bin"),)
    assert set(summary.paths) == gits_answer(tmp_path, patch) == {"logo.bin", "img/logo.bin"}


SYMLINK = "--- /dev/null\n+++ b/link\n@@ -0,0 +1 @@\n+/etc\n\\ No newline at end of file\n"
GITLINK = "+Subproject commit 1234567890123456789012345678901234567890\n"

REFUSED = {
    "new file mode 120000": (
        "diff --git a/link b/link\nnew file mode 120000\n" + SYMLINK,
        "symbolic link",
    ),
    "new file mode 0120000": (
        "diff --git a/link b/link\nnew file mode 0120000\n" + SYMLINK,
        "symbolic link",
    ),
    "a mode on the next line": (
        "diff --git a/link b/link\nnew file mode \n120000\n" + SYMLINK,
        "symbolic link",
    ),
    "mode change to 120000": (
        "diff --git a/f b/f\nold mode 100644\nnew mode 120000\n",
        "symbolic link",
    ),
    "old mode and new mode 120000": (
        "diff --git a/f b/f\nold mode 120000\nnew mode 120000\n--- a/f\n+++ b/f\n"
        "@@ -1 +1 @@\n-inside\n+/etc/passwd\n",
        "symbolic link",
    ),
    "index line 120000": (
        "diff --git a/f b/f\nindex 1234567..89abcde 120000\n--- a/f\n+++ b/f\n"
        "@@ -1 +1 @@\n-inside\n+/etc/passwd\n",
        "symbolic link",
    ),
    "deleted symbolic link": (
        "diff --git a/f b/f\ndeleted file mode 120000\n--- a/f\n+++ /dev/null\n@@ -1 +0,0 @@\n-x\n",
        "symbolic link",
    ),
    "gitlink 160000": (
        "diff --git a/sub b/sub\nnew file mode 160000\nindex 0000000..1234567\n"
        "--- /dev/null\n+++ b/sub\n@@ -0,0 +1 @@\n" + GITLINK,
        "submodule",
    ),
    "gitlink on an index line": (
        "diff --git a/sub b/sub\nindex 1234567..89abcde 160000\n--- a/sub\n+++ b/sub\n"
        "@@ -1 +1 @@\n-Subproject commit 0000000000000000000000000000000000000000\n" + GITLINK,
        "submodule",
    ),
    "an unusual mode": (
        "diff --git a/f b/f\nnew file mode 100600\n--- /dev/null\n+++ b/f\n@@ -0,0 +1 @@\n+x\n",
        "regular file",
    ),
    "not a patch": ("this is not a patch\n", "git cannot read it: error: No valid patches"),
    "a corrupt hunk": (
        "--- a/f\n+++ b/f\n@@ -1 +1 @@\nnot a hunk line\n",
        "git cannot read it: error: corrupt patch at line 4",
    ),
}


@pytest.mark.parametrize("name", REFUSED)
def test_symbolic_links_submodules_and_unreadable_patches_are_refused(name):
    patch, message = REFUSED[name]
    with pytest.raises(ToolError, match="patch refused") as refused:
        patch_paths(patch)
    assert message in str(refused.value)


def test_what_is_refused_is_what_git_would_make_a_symbolic_link(tmp_path):
    """The refusal is not of a harmless text: git applies that patch as a link."""
    patch, _ = REFUSED["new file mode 0120000"]
    git(tmp_path, "apply", stdin=patch.encode())
    assert os.readlink(tmp_path / "link") == "/etc"


@pytest.fixture
def context(tmp_path) -> ToolContext:
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    return ToolContext(workspace=workspace, run_id=1, step_key="s1", environment={})


def test_apply_patch_never_rewrites_a_link_already_in_the_workspace(context):
    """A patch without a single mode line still reaches a link git finds on disk: git would
    rewrite its target to anywhere."""
    (context.workspace / "target.txt").write_text("inside\n")
    (context.workspace / "lnk").symlink_to("target.txt")
    patch = (
        "--- a/lnk\n+++ b/lnk\n@@ -1 +1 @@\n-target.txt\n\\ No newline at end of file\n"
        "+/etc/passwd\n\\ No newline at end of file\n"
    )
    assert patch_paths(patch) == ["lnk"]  # nothing in the patch itself says "link"
    with pytest.raises(ToolError, match="'lnk' is a symbolic link"):
        REGISTRY["apply_patch"].func(context, {"patch": patch})
    assert os.readlink(context.workspace / "lnk") == "target.txt"


def test_apply_patch_reports_renames_and_applies_what_git_read(context):
    (context.workspace / "src").mkdir()
    (context.workspace / "src" / "app.py").write_text("x\n")
    patch = ACCEPTED["rename old/new"][1]
    result = REGISTRY["apply_patch"].func(context, {"patch": patch})
    assert result == "applied the patch; changed:\nsrc/app.py => src/backdoor.py (+0 -0)"
    assert (context.workspace / "src" / "backdoor.py").read_text() == "x\n"
    assert not (context.workspace / "src" / "app.py").exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "name", ["rename from/to", "rename old/new", "---/+++ names that differ, no rename header"]
)
def test_a_rename_out_of_the_claims_is_not_within_them(demo, name):
    """A coder claiming src/app.py may patch it freely, but renaming it to src/backdoor.py
    writes outside the claims: the policy stops for a human."""
    claims = ("src/app.py",)
    inside = evaluate(demo, Call("apply_patch", {"patch": MODIFY}, "coder", claims))
    assert inside.allowed and "claimed files" in inside.reason

    patch = ACCEPTED[name][1]
    verdict = evaluate(demo, Call("apply_patch", {"patch": patch}, "coder", claims))
    assert verdict.outcome == "require_approval"
    assert verdict.rule is not None and verdict.rule.name == "Writes elsewhere"
    widened = evaluate(demo, Call("apply_patch", {"patch": patch}, "coder", (*claims, "src/b*")))
    assert widened.allowed
