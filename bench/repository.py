"""A source repository of realistic size for the benchmark's project.

A project names its repository in `Project.repository` (a local path or a URL, cloned once
into the workspaces; agents/workspace/repository.py). Worktrees, checkouts and merges cost
more as the tree grows, so the benchmark's project starts from a repository shaped like a
small product: a Python package in a few sub-packages, its tests, docs and configuration —
about 400 files and 1.5 MB in one commit.
"""

import subprocess
from pathlib import Path

PACKAGES = ("api", "billing", "catalog", "core", "orders", "reports", "search", "users")
MODULES_PER_PACKAGE = 30
DOCS = 40

MODULE = '''"""{package}.{name}: part of the {package} package."""

from dataclasses import dataclass


@dataclass
class {cls}:
    """A record of the {package} domain."""

    id: int
    name: str
    active: bool = True

    def label(self) -> str:
        return f"{{self.name}} #{{self.id}}"

{functions}
'''

FUNCTION = '''
def {name}_{index}(items: list[{cls}]) -> list[str]:
    """The labels of the active items, sorted ({index})."""
    return sorted(item.label() for item in items if item.active)
'''

TEST = """from app.{package}.{name} import {cls}


def test_label():
    assert {cls}(1, "x").label() == "x #1"
"""


def build_repository(path: Path) -> Path:
    """Create the repository at `path` (a new folder) with everything in one commit."""
    path.mkdir(parents=True)
    files: dict[str, str] = {
        "README.md": "# Shop\n\nA small shop: catalogue, orders, billing and reports.\n",
        "pyproject.toml": '[project]\nname = "shop"\nversion = "1.0"\n',
        ".gitignore": "__pycache__/\n*.pyc\n",
        "src/app/__init__.py": "",
    }
    for package in PACKAGES:
        files[f"src/app/{package}/__init__.py"] = f'"""The {package} package."""\n'
        for index in range(MODULES_PER_PACKAGE):
            name, cls = f"{package}_{index:02d}", f"{package.title()}{index:02d}"
            functions = "".join(FUNCTION.format(name=name, index=i, cls=cls) for i in range(25))
            files[f"src/app/{package}/{name}.py"] = MODULE.format(
                package=package, name=name, cls=cls, functions=functions
            )
            files[f"tests/{package}/test_{name}.py"] = TEST.format(
                package=package, name=name, cls=cls
            )
    for index in range(DOCS):
        files[f"docs/page-{index:02d}.md"] = f"# Page {index}\n\n" + "Some prose. " * 200 + "\n"
    for relative, text in files.items():
        target = path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    git = ["git", "-C", str(path), "-c", "user.name=Bench", "-c", "user.email=bench@localhost"]
    subprocess.run([*git, "init", "--quiet", "--initial-branch", "main"], check=True)
    subprocess.run([*git, "add", "--all"], check=True)
    subprocess.run([*git, "commit", "--quiet", "--message", "The shop as it is"], check=True)
    return path


def describe(path: Path) -> str:
    files = subprocess.run(
        ["git", "-C", str(path), "ls-files"], check=True, capture_output=True, text=True
    ).stdout.splitlines()
    size = sum((path / name).stat().st_size for name in files)
    return f"{len(files)} files, {size / 1e6:.1f} MB"
