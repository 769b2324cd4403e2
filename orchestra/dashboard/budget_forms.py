"""The project budget form: shape only; `engine.project_budgets.set_project_budget` has the
last word (a soft default above the hard one, say)."""

from orchestra.dashboard.forms import CleanForm, token_limit, usd_limit

SOFT = "New runs pause and ask a person past it."
HARD = "New runs stop past it."
PERIOD = "No new task once the project has spent it."


class ProjectBudgetForm(CleanForm):
    run_soft_usd = usd_limit("Soft limit per run ($)", SOFT)
    run_hard_usd = usd_limit("Hard limit per run ($)", HARD)
    run_soft_tokens = token_limit("Soft limit per run (tokens)", SOFT)
    run_hard_tokens = token_limit("Hard limit per run (tokens)", HARD)
    day_usd = usd_limit("Per day ($)", PERIOD)
    day_tokens = token_limit("Per day (tokens)", PERIOD)
    month_usd = usd_limit("Per month ($)", PERIOD)
    month_tokens = token_limit("Per month (tokens)", PERIOD)

    def run_fields(self):
        return [field for field in self if field.name.startswith("run_")]

    def period_fields(self):
        return [field for field in self if not field.name.startswith("run_")]
