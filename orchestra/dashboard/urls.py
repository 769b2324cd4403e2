from django.contrib.auth import views as auth_views
from django.templatetags.static import static
from django.urls import path
from django.views.generic import RedirectView

from .views import (
    approvals,
    budgets,
    commits,
    history,
    home,
    metrics,
    policy,
    profiles,
    projects,
    providers,
    runs,
    steps,
    trace,
)

app_name = "dashboard"

urlpatterns = [
    path("", home.home, name="home"),
    path(
        "login/",
        auth_views.LoginView.as_view(redirect_authenticated_user=True),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(next_page="dashboard:login"), name="logout"),
    # Browsers ask for /favicon.ico whatever the page's <link rel="icon"> says.
    path("favicon.ico", RedirectView.as_view(url=static("orchestra/favicon.svg"))),
    path("projects/", projects.projects, name="projects"),
    path("projects/<slug:slug>/", projects.project, name="project"),
    path("projects/<slug:slug>/tasks/", projects.new_task, name="new-task"),
    path("projects/<slug:slug>/policy/", policy.policy_page, name="policy"),
    path("projects/<slug:slug>/policy/rules/", policy.add_rule, name="policy-add"),
    path("projects/<slug:slug>/policy/rules/<int:rule_id>/", policy.edit_rule, name="policy-edit"),
    path(
        "projects/<slug:slug>/policy/rules/<int:rule_id>/delete/",
        policy.delete_rule,
        name="policy-delete",
    ),
    path(
        "projects/<slug:slug>/policy/rules/<int:rule_id>/move/",
        policy.move_rule,
        name="policy-move",
    ),
    path("projects/<slug:slug>/policy/reset/", policy.reset_policy, name="policy-reset"),
    path("projects/<slug:slug>/budget/", budgets.project_budget, name="budget"),
    path("projects/<slug:slug>/agents/", profiles.profiles, name="profiles"),
    path("projects/<slug:slug>/agents/<slug:role>/", profiles.profile, name="profile"),
    path(
        "projects/<slug:slug>/agents/<slug:role>/versions/",
        profiles.versions,
        name="profile-versions",
    ),
    path("runs/", history.history, name="history"),
    path("runs/<int:run_id>/", runs.run, name="run"),
    path("runs/<int:run_id>/part/<slug:name>/", runs.run_partial, name="run-partial"),
    path("runs/<int:run_id>/parts/", runs.run_parts, name="run-parts"),
    path("runs/<int:run_id>/cancel/", runs.cancel, name="cancel"),
    path("runs/<int:run_id>/pause/", runs.pause, name="pause"),
    path("runs/<int:run_id>/resume/", runs.resume, name="resume"),
    path("runs/<int:run_id>/fork/", runs.fork, name="fork"),
    path("runs/<int:run_id>/steps/<slug:key>/retry/", runs.retry, name="retry-step"),
    path("runs/<int:run_id>/rules/<int:rule_id>/revoke/", runs.revoke_rule, name="revoke-rule"),
    path("runs/<int:run_id>/diff/", commits.run_diff, name="run-diff"),
    path("runs/<int:run_id>/trace/", trace.trace, name="trace"),
    path("runs/<int:run_id>/calls/<int:call_id>/", trace.model_call, name="model-call"),
    path("runs/<int:run_id>/steps/<slug:key>/", steps.step, name="step"),
    path(
        "runs/<int:run_id>/steps/<slug:key>/conversation/",
        steps.conversation,
        name="step-conversation",
    ),
    path("approvals/", approvals.inbox, name="approvals"),
    path("approvals/badge/", approvals.badge, name="approvals-badge"),
    path("approvals/<int:checkpoint_id>/", approvals.approval, name="approval"),
    path("approvals/<int:checkpoint_id>/budget/", budgets.raise_limit, name="raise-budget"),
    path("metrics/", metrics.metrics_page, name="metrics"),
    path("providers/", providers.providers, name="providers"),
    path("providers/<int:provider_id>/", providers.provider, name="provider"),
    path("providers/<int:provider_id>/test/", providers.test_connection, name="provider-test"),
]
