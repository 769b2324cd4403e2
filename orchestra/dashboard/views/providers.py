"""Model providers: project admins add and edit them, and test a connection with one real
call. A provider's key is typed into a write-only field and never rendered back."""

from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from agents.forms import ConnectionTestForm, ProviderForm
from agents.llm.providers import check_connection, may_manage_providers, save_provider
from agents.models import Provider
from orchestra.dashboard.auth import login_required

TEMPLATE = "dashboard/providers.html"
REFUSED = "Only a project admin may see and change model providers."


@login_required
@require_http_methods(["GET", "POST"])
def providers(request):
    """GET: the providers and the form to add one; POST: add it."""
    if not may_manage_providers(request.user):
        return render(request, TEMPLATE, {"refused": REFUSED}, status=403)
    form = ProviderForm(request.POST or None)
    if request.method == "POST":
        if form.is_valid():
            provider = _save(request, form)
            return redirect("dashboard:provider", provider.pk)
        return _page(request, form=form, status=400)
    return _page(request, form=form)


@login_required
@require_http_methods(["GET", "POST"])
def provider(request, provider_id: int):
    """One provider: its form (GET, POST to save) and its connection test."""
    if not may_manage_providers(request.user):
        return render(request, TEMPLATE, {"refused": REFUSED}, status=403)
    editing = get_object_or_404(Provider, pk=provider_id)
    form = ProviderForm(request.POST or None, instance=editing)
    if request.method == "POST":
        if form.is_valid():
            _save(request, form)
            return redirect("dashboard:provider", editing.pk)
        return _page(request, form=form, editing=editing, status=400)
    return _page(request, form=form, editing=editing)


@login_required
@require_POST
def test_connection(request, provider_id: int):
    if not may_manage_providers(request.user):
        return render(request, TEMPLATE, {"refused": REFUSED}, status=403)
    editing = get_object_or_404(Provider, pk=provider_id)
    test_form = ConnectionTestForm(request.POST)
    if not test_form.is_valid():
        form = ProviderForm(instance=editing)
        return _page(request, form=form, editing=editing, test_form=test_form, status=400)
    check = check_connection(editing, test_form.cleaned_data["model"])
    return _page(
        request,
        form=ProviderForm(instance=editing),
        editing=editing,
        test_form=test_form,
        check=check,
    )


def _save(request, form: ProviderForm) -> Provider:
    return save_provider(
        request.user,
        form.save(commit=False),
        api_key=form.cleaned_data.get("api_key", ""),
        clear_key=form.cleaned_data.get("clear_key", False),
    )


def _page(request, *, form, editing=None, test_form=None, check=None, status=200):
    return render(
        request,
        TEMPLATE,
        {
            "providers": Provider.objects.prefetch_related("profiles"),
            "form": form,
            "editing": editing,
            "test_form": test_form or ConnectionTestForm(),
            "check": check,
        },
        status=status,
    )
