"""Pages for mail sessions. Thin: look up the user's own objects, call a
service, render. Another user's session is a 404, never a 403 that would
confirm it exists."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods

from mailsessions import services
from mailsessions.models import MailSession


def _own_session(request, pk: int) -> MailSession:
    return get_object_or_404(MailSession.objects.owned_by(request.user), pk=pk)


@login_required
def session_list(request):
    sessions = MailSession.objects.owned_by(request.user).order_by("name", "id")
    return render(request, "mailsessions/session_list.html", {"sessions": sessions})


@login_required
def session_detail(request, pk: int):
    session = _own_session(request, pk)
    return render(request, "mailsessions/session_detail.html", {"session": session})


@login_required
@require_http_methods(["GET", "POST"])
def session_delete(request, pk: int):
    session = _own_session(request, pk)
    if request.method == "POST":
        name = session.name
        services.mail_session_delete(session=session)
        messages.success(request, f"Mail session “{name}” deleted.")
        return redirect("mailsessions:session-list")
    return render(request, "mailsessions/session_confirm_delete.html", {"session": session})
