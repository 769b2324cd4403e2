"""Production settings: `manage.py check --deploy` is clean with exactly the production block of
.env.example; a deployment without its own secret key does not start; the Content-Security-
Policy is sent; sign-in is throttled after repeated failures while API tokens keep working."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management.utils import get_random_secret_key
from django.test import Client

from orchestra.models import ApiToken

ROOT = Path(__file__).resolve().parents[1]
# Variables that point the check at a real deployment's services are left out of the child's
# environment: the check is about the web settings, and must not need PostgreSQL or Redis.
CONFIGURED_ONLY = ("DATABASE_URL", "REDIS_URL")


def production_block() -> dict[str, str]:
    """The commented `# NAME=value` lines of .env.example's production block."""
    text = (ROOT / ".env.example").read_text()
    block = text.split("# --- Production", 1)[1].split("\n\n", 1)[0]
    env = dict(re.findall(r"^# ([A-Z][A-Z0-9_]*)=(.*)$", block, flags=re.MULTILINE))
    assert "DJANGO_SECRET_KEY" in env and "DJANGO_ALLOWED_HOSTS" in env, block
    return env


def manage(tmp_path: Path, *argv: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", *CONFIGURED_ONLY))}
    return subprocess.run(
        [sys.executable, "manage.py", *argv],
        cwd=ROOT,
        env=base | {"ORCHESTRA_DATA_DIR": str(tmp_path / "var")} | env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_is_clean_with_the_documented_production_environment(tmp_path):
    env = production_block()
    assert env["DJANGO_SECRET_KEY"].startswith("<"), "the example must not carry a real key"
    env["DJANGO_SECRET_KEY"] = get_random_secret_key()
    result = manage(tmp_path, "check", "--deploy", "--fail-level", "WARNING", **env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_check_deploy_warns_about_the_local_defaults(tmp_path):
    """The same check without the production block fails: the test above is not vacuous."""
    result = manage(tmp_path, "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode != 0
    for warning in ("W004", "W008", "W009", "W012", "W016"):
        assert f"security.{warning}" in result.stderr + result.stdout


@pytest.mark.parametrize("key", [None, "change-me"])
def test_a_public_site_without_its_own_secret_key_does_not_start(tmp_path, key):
    env = production_block()
    env.pop("DJANGO_SECRET_KEY")
    if key is not None:
        env["DJANGO_SECRET_KEY"] = key
    result = manage(tmp_path, "check", **env)
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY must be set" in result.stderr


def test_a_local_install_starts_with_nothing_set(tmp_path):
    result = manage(tmp_path, "check")
    assert result.returncode == 0, result.stderr


def test_bad_proxy_header_is_reported(tmp_path):
    result = manage(tmp_path, "check", ORCHESTRA_PROXY_SSL_HEADER="https")
    assert result.returncode != 0
    assert "ORCHESTRA_PROXY_SSL_HEADER" in result.stderr


@pytest.mark.parametrize(
    ("remote", "token", "message"),
    [
        ("git://central/git", "orcw_x", "ORCHESTRA_GIT_REMOTE must be an http(s) URL"),
        ("central:8000/git", "orcw_x", "ORCHESTRA_GIT_REMOTE must be an http(s) URL"),
        ("https:///git", "orcw_x", "ORCHESTRA_GIT_REMOTE must be an http(s) URL"),
        (
            "https://box:orcw_x@central/git",
            "orcw_x",
            "ORCHESTRA_GIT_REMOTE must not hold credentials: set ORCHESTRA_GIT_TOKEN instead",
        ),
        (
            "https://box@central/git",
            "orcw_x",
            "ORCHESTRA_GIT_REMOTE must not hold credentials",
        ),
        (
            "https://central/git",
            " ",
            "ORCHESTRA_GIT_REMOTE is set but ORCHESTRA_GIT_TOKEN is not",
        ),
    ],
)
def test_a_worker_with_a_bad_git_remote_does_not_start(tmp_path, remote, token, message):
    result = manage(tmp_path, "check", ORCHESTRA_GIT_REMOTE=remote, ORCHESTRA_GIT_TOKEN=token)
    assert result.returncode != 0
    assert f"ImproperlyConfigured: {message}" in result.stderr
    assert "orcw_x" not in result.stderr  # a credential is never echoed


def test_a_worker_with_an_https_remote_and_a_token_starts(tmp_path):
    env = {"ORCHESTRA_GIT_REMOTE": "https://central:8000/git/", "ORCHESTRA_GIT_TOKEN": "orcw_x"}
    result = manage(tmp_path, "check", **env)
    assert result.returncode == 0, result.stderr


# --- in process ---------------------------------------------------------------------------
def test_pages_carry_a_content_security_policy_without_inline_scripts(owner):
    client = Client()
    client.force_login(owner)
    response = client.get("/")
    assert response.status_code == 200
    policy = response["Content-Security-Policy"]
    assert "script-src 'self'" in policy
    assert "'unsafe-inline'" not in policy.split("script-src", 1)[1].split(";", 1)[0]
    assert "'unsafe-eval'" not in policy
    assert "frame-ancestors 'none'" in policy
    # The policy forbids inline scripts, so the pages must not have any.
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", response.text)
    assert not re.search(r"\son[a-z]+=", response.text)


def test_api_docs_load_their_scripts_from_this_site(owner):
    client = Client()
    client.force_login(owner)
    response = client.get("/api/docs")
    assert response.status_code == 200
    assert "script-src 'self'" in response["Content-Security-Policy"]
    scripts = re.findall(r"<script([^>]*)>", response.text)
    # Swagger UI comes from static files; its settings are inert JSON, not a script.
    assert all("src=" in attrs or 'type="application/json"' in attrs for attrs in scripts)
    assert all("http" not in attrs for attrs in scripts if "src=" in attrs)


def login(client: Client, username: str, password: str):
    return client.post("/login/", {"username": username, "password": password})


def test_sign_in_is_throttled_after_repeated_failures(owner, settings):
    client = Client()
    assert login(client, "olivia", "wrong").status_code == 200  # the form again, with an error
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        login(client, "olivia", "still wrong")
    refused = login(client, "olivia", "pw-olivia")  # the right password, too late
    assert refused.status_code == 429
    assert "_auth_user_id" not in client.session
    assert client.get("/").status_code == 302  # still signed out


def test_throttling_spares_other_people_and_api_tokens(owner, viewer, settings):
    token = ApiToken.issue(owner)
    for _ in range(settings.AXES_FAILURE_LIMIT):
        login(Client(), "olivia", "wrong")
    assert login(Client(), "olivia", "pw-olivia").status_code == 429
    # Another person signs in from the same address.
    assert login(Client(), "vera", "pw-vera").status_code == 302
    # The locked-out user's API token still works: it never goes through a password.
    api = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
    assert api.get("/api/projects").status_code == 200


def test_a_success_before_the_limit_resets_the_count(owner, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        login(Client(), "olivia", "wrong")
    assert login(Client(), "olivia", "pw-olivia").status_code == 302
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        login(Client(), "olivia", "wrong")
    assert login(Client(), "olivia", "pw-olivia").status_code == 302


def test_anonymous_login_page_and_unknown_user_failures(db):
    client = Client()
    assert client.get("/login/").status_code == 200
    assert login(client, "nobody", "x").status_code == 200
