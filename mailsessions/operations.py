"""Saving and deleting operations, and telling when a schedule keeps failing."""

from __future__ import annotations

import datetime as dt
import logging
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.core.mail import send_mail
from django.db import transaction
from django.template.loader import render_to_string
from django.utils import timezone

from mailsessions import policy, runs
from mailsessions.backends import get_backend_class
from mailsessions.backends.base import BackendError
from mailsessions.mime import safe_filename
from mailsessions.models import Operation, OperationAttachment, Run, RunStatus

logger = logging.getLogger(__name__)

FINISHED = (RunStatus.SUCCEEDED, RunStatus.PARTLY_FAILED, RunStatus.FAILED)

# A schedule whose last runs all failed is flagged (list, operation page, admin).
FAILING_AFTER = 3


@transaction.atomic
def operation_save(*, form, upload: UploadedFile | None = None) -> Operation:
    """Save a validated operation form, its schedule and an uploaded attachment."""
    operation = form.save()
    runs.operation_schedule_set(operation=operation, schedule=form.schedule())
    if upload is not None:
        OperationAttachment.objects.create(
            operation=operation,
            file=upload,
            filename=safe_filename(upload.name),
            content_type=upload.content_type or "application/octet-stream",
            size=upload.size,
        )
    return operation


@transaction.atomic
def operation_delete(*, operation: Operation) -> None:
    task = operation.periodic_task
    operation.delete()
    if task is not None:
        task.delete()


def operation_failing(*, operation: Operation, last: int = FAILING_AFTER) -> bool:
    """True when the last ``last`` finished runs all failed."""
    statuses = list(
        operation.runs.filter(status__in=FINISHED).values_list("status", flat=True)[:last]
    )
    return len(statuses) == last and all(s == RunStatus.FAILED for s in statuses)


def operation_just_became_failing(*, operation: Operation, last: int = FAILING_AFTER) -> bool:
    """True when the latest finished run is exactly the ``last``-th failure in a row."""
    statuses = list(
        operation.runs.filter(status__in=FINISHED).values_list("status", flat=True)[: last + 1]
    )
    failures = 0
    for status in statuses:
        if status != RunStatus.FAILED:
            break
        failures += 1
    return failures == last


def operation_has_pending_run(*, operation: Operation) -> bool:
    """True when a run of ``operation`` waits in the queue or is running.

    Runs older than a run's hard time limit do not count: their task was
    lost (a broker without persistence restarted, a worker died) and must
    not hold the schedule back for ever.
    """
    cutoff = timezone.now() - dt.timedelta(seconds=runs.RUN_TIME_LIMIT + runs.LEASE_MARGIN)
    return operation.runs.filter(
        status__in=[RunStatus.QUEUED, RunStatus.RUNNING], queued__gte=cutoff
    ).exists()


def operation_notify_if_failing(*, operation: Operation) -> bool:
    """E-mail the owner when ``operation`` has just become failing; True if sent.

    Called after every finished run. Sends once per streak: on the
    ``FAILING_AFTER``-th failure in a row, not on the ones after it; a run that
    does not fail ends the streak. Goes through the session's own SMTP server
    when the session sends mail, else (or when that fails) through the site's
    mail settings (``EMAIL_*``). Off with ``MAILSESSIONS_NOTIFY_FAILING=False``.
    """
    if not getattr(settings, "MAILSESSIONS_NOTIFY_FAILING", True):
        return False
    if not operation_just_became_failing(operation=operation):
        return False
    session = operation.session
    owner = session.owner
    if not owner.email:
        logger.warning("operation %s keeps failing; its owner has no e-mail address", operation.pk)
        return False
    last_run = operation.runs.filter(status=RunStatus.FAILED).first()
    subject = f"Mail Sessions: “{operation.name}” keeps failing"
    body = render_to_string(
        "mailsessions/email/failing_schedule.txt",
        {
            "operation": operation,
            "session": session,
            "owner": owner,
            "run": last_run,
            "failures": FAILING_AFTER,
            "site_url": getattr(settings, "MAILSESSIONS_SITE_URL", "").rstrip("/"),
        },
    )
    if session.sends and _send_through_session(session, owner.email, subject, body):
        return True
    send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, [owner.email])
    return True


def _send_through_session(session, to: str, subject: str, body: str) -> bool:
    """Send a notice through the session's SMTP settings; False when that failed."""
    sender = session.sender_address() or settings.DEFAULT_FROM_EMAIL
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = format_datetime(timezone.now())
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    message.set_content(body)
    try:
        config = session.outgoing_config()
        policy.ensure_allowed(config.host, config.port)
        with get_backend_class("smtp")(config) as backend:
            backend.send(message.as_bytes(), sender=sender, recipients=[to])
    except BackendError as exc:
        # Often the same cause as the failing runs (a changed password):
        # the site's own mail settings are the fallback.
        logger.warning("failure notice via the session's SMTP failed: %s", exc.message)
        return False
    return True


def runs_requeue_lost(*, older_than: int = runs.RUN_TIME_LIMIT + runs.LEASE_MARGIN) -> list[int]:
    """Send the task of runs queued for longer than a run may take, again.

    Their message was lost (a broker without persistence restarted). Sending
    it twice is harmless: ``tasks.execute_run`` skips a run that finished and
    the session lease keeps two deliveries from working the mailbox together.
    Returns the ids of the runs sent again.
    """
    from mailsessions import tasks

    cutoff = timezone.now() - dt.timedelta(seconds=older_than)
    lost = list(
        Run.objects.filter(status=RunStatus.QUEUED, queued__lt=cutoff).values_list("pk", flat=True)
    )
    for run_id in lost:
        tasks.execute_run.delay(run_id)
    return lost
