"""docker-compose.yml is written and validated here (no Docker engine runs in CI): it parses,
has the production services, is configured by environment only, and every `orchestra`
command it names exists in the console script."""

from pathlib import Path

import yaml

from orchestra.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def subcommands() -> set[str]:
    parser = build_parser()
    [group] = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    return set(group.choices)


def test_services_are_all_there():
    assert {"web", "worker", "beat", "redis", "postgres"} <= set(compose()["services"])


def test_every_orchestra_command_exists_and_parses():
    parser = build_parser()
    known = subcommands()
    seen = []
    for name, service in compose()["services"].items():
        command = service.get("command")
        if not command or command[0] != "orchestra":
            continue
        assert command[1] in known, f"{name}: `orchestra {command[1]}` does not exist"
        parser.parse_args(command[1:])  # exits (fails the test) on unknown options
        seen.append(command[1])
    assert {"web", "worker", "beat"} <= set(seen)


def test_configuration_comes_from_the_environment():
    services = compose()["services"]
    for name in ("web", "worker", "beat"):
        env = services[name]["environment"]
        assert env["DATABASE_URL"].startswith("postgres://")
        assert env["REDIS_URL"].startswith("redis://")


def test_the_console_script_is_declared():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'orchestra = "orchestra.cli:main"' in pyproject


def test_the_image_has_git_and_every_process_shares_the_workspaces():
    """Workers and the web process both run git on the same repositories."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "apt-get install" in dockerfile and " git" in dockerfile
    services = compose()["services"]
    for name in ("web", "worker", "beat"):
        assert "workspaces:/data" in services[name]["volumes"], name
