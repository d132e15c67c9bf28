"""Pages for mail sessions. Thin: look up the user's own objects, call a
service, render. Another user's session is a 404, never a 403 that would
confirm it exists."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from mailsessions import services
from mailsessions.models import ConnectionTest, MailSession, TestKind


def _own_session(request, pk: int) -> MailSession:
    return get_object_or_404(MailSession.objects.owned_by(request.user), pk=pk)


@login_required
def session_list(request):
    sessions = MailSession.objects.owned_by(request.user).order_by("name", "id")
    return render(request, "mailsessions/session_list.html", {"sessions": sessions})


@login_required
def session_detail(request, pk: int):
    session = _own_session(request, pk)
    buttons = []
    if session.reads:
        buttons.append(("Test connection", TestKind.INCOMING))
    if session.sends:
        buttons.append(
            ("Test outgoing mail" if session.reads else "Test connection", TestKind.OUTGOING)
        )
        buttons.append(("Send test mail", TestKind.TEST_MAIL))
    context = {
        "session": session,
        "test_buttons": [
            (label, reverse("mailsessions:session-test", args=[pk, kind]), kind)
            for label, kind in buttons
        ],
    }
    return render(request, "mailsessions/session_detail.html", context)


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


# --- connection tests ---------------------------------------------------------


def start_test_response(request, *, kind: str, instance: MailSession, session: MailSession | None):
    """Enqueue a test of ``instance``'s settings and answer with where to poll.

    ``instance`` may be unsaved (the wizard's current data); ``session`` is the
    saved session whose "last test" the result updates, if any.
    """
    if kind == TestKind.INCOMING:
        if not instance.reads:
            return JsonResponse({"error": "This session does not read mail."}, status=400)
        protocol, config = instance.in_protocol, instance.incoming_config()
        sender = send_to = ""
    else:
        if not instance.sends:
            return JsonResponse({"error": "This session does not send mail."}, status=400)
        protocol, config = "smtp", instance.outgoing_config()
        sender, send_to = instance.sender_address(), instance.test_mail_to
        if kind == TestKind.TEST_MAIL and not send_to:
            return JsonResponse(
                {"errors": {"test_mail_to": ["Enter the address to send the test mail to."]}},
                status=400,
            )
    try:
        test = services.connection_test_start(
            owner=request.user,
            kind=kind,
            protocol=protocol,
            config=config,
            session=session,
            sender=sender,
            send_to=send_to,
            session_name=instance.name,
        )
    except services.RateLimited as exc:
        return JsonResponse({"error": str(exc)}, status=429)
    return JsonResponse(
        {"id": str(test.pk), "status_url": reverse("mailsessions:test-status", args=[test.pk])},
        status=202,
    )


@login_required
@require_POST
def session_test(request, pk: int, kind: str):
    session = _own_session(request, pk)
    if kind not in TestKind.values:
        raise Http404
    return start_test_response(request, kind=kind, instance=session, session=session)


@login_required
def test_status(request, test_id):
    test = get_object_or_404(ConnectionTest.objects.filter(owner=request.user), pk=test_id)
    return JsonResponse(
        {
            "id": str(test.pk),
            "kind": test.kind,
            "status": test.status,
            "done": test.done,
            "summary": test.summary,
            "target": test.target,
            "stages": test.stages,
        }
    )
