"""What a run has spent against its limits, for the run page's usage card and the home page's
active runs: a model without a price shows "cost unknown", never $0."""

from django import template

from agents.models import ModelCall, RunBudget
from orchestra.dashboard.templatetags.dashboard import tokens, usd

register = template.Library()


@register.inclusion_tag("dashboard/_spend.html")
def spend_of(run, compact: bool = False) -> dict:
    budget = RunBudget.objects.filter(run=run).first()
    unpriced = ModelCall.objects.filter(run=run, cost_unknown=True).count()
    priced = ModelCall.objects.filter(run=run, cost_unknown=False).exists()
    if unpriced and not priced:
        cost = "cost unknown"
    elif unpriced:
        cost = f"{usd(run.cost_usd)} + cost unknown"
    else:
        cost = usd(run.cost_usd)
    limits = []
    if budget is not None:
        used = run.input_tokens + run.output_tokens
        for which in ("soft", "hard"):
            amount, count = getattr(budget, f"{which}_usd"), getattr(budget, f"{which}_tokens")
            if amount is not None:
                limits.append(f"{cost} of {usd(amount)} ({which} limit)")
            if count is not None:
                limits.append(f"{tokens(used)} of {tokens(count)} tokens ({which} limit)")
    return {"run": run, "cost": cost, "limits": limits, "unpriced": unpriced, "compact": compact}
