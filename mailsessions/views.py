"""Pages for mail sessions. Thin: look up the user's own objects, call a
service, render. Another user's session is a 404, never a 403 that would
confirm it exists."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import FileResponse, Http404, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from mailsessions import operations, services
from mailsessions import runs as runs_service
from mailsessions.forms import operation_form_class
from mailsessions.mime import safe_filename
from mailsessions.models import (
    ConnectionTest,
    MailSession,
    Operation,
    OperationKind,
    Run,
    StoredAttachment,
    StoredMessage,
    TestKind,
)


def _own_session(request, pk: int) -> MailSession:
    return get_object_or_404(MailSession.objects.owned_by(request.user), pk=pk)


@login_required
def session_list(request):
    # Only the listed columns: not the encrypted passwords or the stored test stages.
    sessions = MailSession.objects.owned_by(request.user).order_by("name", "id").only(*LIST_FIELDS)
    # One reverse() for the page instead of one per row.
    detail_prefix = reverse("mailsessions:session-detail", args=[0])[: -len("0/")]
    return render(
        request,
        "mailsessions/session_list.html",
        {"sessions": sessions, "detail_prefix": detail_prefix},
    )


LIST_FIELDS = (
    "name",
    "mode",
    "in_protocol",
    "in_host",
    "in_port",
    "ews_endpoint",
    "in_verify_certificate",
    "out_via_ews",
    "out_host",
    "out_port",
    "out_verify_certificate",
    "last_test_at",
    "last_test_outcome",
    "last_test_summary",
    "updated",
)


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
    ops = list(session.operations.select_related("periodic_task"))
    for op in ops:
        op.last_run = op.runs.first()
        op.next_run = runs_service.next_run_at(op)
        op.failing = operations.operation_failing(operation=op)
    kinds = [
        k
        for k in OperationKind
        if (k == OperationKind.SEND and session.sends)
        or (k != OperationKind.SEND and session.reads)
    ]
    context = {
        "operations": ops,
        "kinds": kinds,
        "message_count": session.messages.count(),
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
        protocol, config = instance.outgoing_protocol, instance.outgoing_config()
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


# --- operations, runs, stored messages ------------------------------------------


def _own_operation(request, pk: int) -> Operation:
    return get_object_or_404(
        Operation.objects.select_related("session", "periodic_task").filter(
            session__owner=request.user
        ),
        pk=pk,
    )


@login_required
@require_http_methods(["GET", "POST"])
def operation_create(request, pk: int, kind: str):
    session = _own_session(request, pk)
    if kind not in OperationKind.values:
        raise Http404
    return _operation_form(request, session=session, kind=kind, instance=None)


@login_required
@require_http_methods(["GET", "POST"])
def operation_edit(request, pk: int):
    operation = _own_operation(request, pk)
    return _operation_form(
        request, session=operation.session, kind=operation.kind, instance=operation
    )


def _operation_form(request, *, session: MailSession, kind: str, instance: Operation | None):
    form_class = operation_form_class(kind)
    form = form_class(
        request.POST or None, request.FILES or None, session=session, kind=kind, instance=instance
    )
    if request.method == "POST" and form.is_valid():
        operation = operations.operation_save(
            form=form, upload=form.cleaned_data.get("add_attachment")
        )
        messages.success(request, f"Operation “{operation.name}” saved.")
        return redirect(operation)
    context = {
        "session": session,
        "form": form,
        "kind": OperationKind(kind),
        "operation": instance,
    }
    return render(request, "mailsessions/operation_form.html", context)


@login_required
def operation_detail(request, pk: int):
    operation = _own_operation(request, pk)
    history = operation.runs.all()[:50]
    context = {
        "operation": operation,
        "session": operation.session,
        "runs": history,
        "next_run": runs_service.next_run_at(operation),
        "schedule": runs_service.schedule_of(operation),
        "failing": operations.operation_failing(operation=operation),
    }
    return render(request, "mailsessions/operation_detail.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def operation_delete(request, pk: int):
    operation = _own_operation(request, pk)
    if request.method == "POST":
        session = operation.session
        operations.operation_delete(operation=operation)
        messages.success(request, f"Operation “{operation.name}” deleted.")
        return redirect(session)
    return render(request, "mailsessions/operation_confirm_delete.html", {"operation": operation})


@login_required
@require_POST
def operation_run(request, pk: int):
    operation = _own_operation(request, pk)
    try:
        operation.full_clean()
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect(operation)
    run = runs_service.operation_run_now(operation=operation)
    return redirect("mailsessions:run-detail", pk=run.pk)


def _own_run(request, pk: int) -> Run:
    return get_object_or_404(
        Run.objects.select_related("operation__session").filter(
            operation__session__owner=request.user
        ),
        pk=pk,
    )


@login_required
def run_detail(request, pk: int):
    run = _own_run(request, pk)
    if request.headers.get("Accept") == "application/json":
        return JsonResponse(_run_json(run))
    stored = run.messages.order_by("date", "id")[:500]
    touched = run.touched.order_by("date", "id")[:500]
    return render(
        request,
        "mailsessions/run_detail.html",
        {
            "run": run,
            "operation": run.operation,
            "session": run.operation.session,
            "stored": stored,
            "touched": touched,
        },
    )


def _run_json(run: Run) -> dict:
    return {
        "id": run.pk,
        "status": run.status,
        "status_label": run.get_status_display(),
        "done": run.done,
        "error": run.error,
        "counts": {
            f: getattr(run, f)
            for f in ("found", "read", "stored", "duplicates", "sent", "changed", "failed")
        },
        "duration_ms": run.duration_ms,
    }


@login_required
def message_list(request, pk: int):
    session = _own_session(request, pk)
    stored = session.messages.order_by("-date", "-id")
    query = request.GET.get("q", "").strip()
    if query:
        stored = stored.filter(subject__icontains=query) | stored.filter(from_addr__icontains=query)
    return render(
        request,
        "mailsessions/message_list.html",
        {"session": session, "stored": stored[:200], "query": query},
    )


def _own_message(request, pk: int) -> StoredMessage:
    return get_object_or_404(
        StoredMessage.objects.select_related("session").filter(session__owner=request.user), pk=pk
    )


@login_required
def message_detail(request, pk: int):
    message = _own_message(request, pk)
    return render(
        request,
        "mailsessions/message_detail.html",
        {"message": message, "session": message.session, "attachments": message.attachments.all()},
    )


@login_required
def message_raw(request, pk: int):
    message = _own_message(request, pk)
    if not message.raw:
        raise Http404
    return FileResponse(
        message.raw.open("rb"),
        as_attachment=True,
        filename=f"message-{message.pk}.eml",
        content_type="message/rfc822",
    )


@login_required
def attachment_download(request, pk: int):
    attachment = get_object_or_404(
        StoredAttachment.objects.filter(message__session__owner=request.user), pk=pk
    )
    if not attachment.file:
        raise Http404
    # Always a download, never rendered inline: the content is untrusted.
    return FileResponse(
        attachment.file.open("rb"),
        as_attachment=True,
        filename=safe_filename(attachment.filename or "attachment"),
        content_type="application/octet-stream",
    )
