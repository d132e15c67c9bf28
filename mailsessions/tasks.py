"""Celery tasks: take ids, call one service, own retries and time limits."""

from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings

from mailsessions import operations, runs, services
from mailsessions.models import Operation, Run, RunStatus, RunTrigger

logger = logging.getLogger(__name__)

RETRY_BASE = 10  # seconds; doubles per retry (settings.MAILSESSIONS_RETRY_BASE_SECONDS)
RETRY_CAP = 600
MAX_RETRIES = 5


def retry_countdown(retries: int) -> int:
    """Seconds before retry number ``retries + 1``: 10, 20, 40, 80, 160 by default."""
    base = getattr(settings, "MAILSESSIONS_RETRY_BASE_SECONDS", RETRY_BASE)
    return int(min(RETRY_CAP, base * 2**retries))


DONE = (RunStatus.SUCCEEDED, RunStatus.PARTLY_FAILED, RunStatus.FAILED)


@shared_task(acks_late=True, soft_time_limit=120, time_limit=150, ignore_result=True)
def run_connection_test(test_id: str) -> None:
    services.connection_test_run(test_id=test_id)


@shared_task(
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=runs.RUN_TIME_LIMIT - 30,
    time_limit=runs.RUN_TIME_LIMIT,
    max_retries=None,
    ignore_result=True,
)
def execute_run(self, run_id: int) -> None:
    """Run a queued operation; retry transient failures with backoff.

    A redelivered message (worker killed mid-run) executes the run again:
    the services are idempotent (stored messages are not stored twice, and
    messages are only changed on the server after they are stored).
    """
    if Run.objects.filter(pk=run_id, status__in=DONE).exists():
        return  # a redelivered task: the run finished (and notified) already
    try:
        run = runs.run_execute(run_id=run_id)
    except runs.MailboxBusy:
        # Not a failure: another run has the mailbox. Wait without counting.
        raise self.retry(countdown=15, max_retries=None) from None
    except Run.DoesNotExist:
        logger.warning("run %s no longer exists", run_id)
        return
    if getattr(run, "retryable", False) and self.request.retries < MAX_RETRIES:
        countdown = retry_countdown(self.request.retries)
        Run.objects.filter(pk=run.pk).update(
            status=RunStatus.QUEUED,
            error=f"{run.error}\nRetrying in {countdown} s (attempt {self.request.retries + 2}).",
        )
        raise self.retry(countdown=countdown)
    try:
        operations.operation_notify_if_failing(operation=run.operation)
    except Exception:
        # The run's outcome is recorded; a failed notice must not retry the run.
        logger.exception("could not notify the owner of operation %s", run.operation_id)


@shared_task(acks_late=True, ignore_result=True)
def run_scheduled_operation(operation_id: int) -> None:
    """Beat's entry point: queue a run of the operation, if it still exists."""
    operation = Operation.objects.filter(pk=operation_id).select_related("session").first()
    if operation is None:
        logger.warning("scheduled operation %s no longer exists", operation_id)
        return
    if operations.operation_has_pending_run(operation=operation):
        # Workers are behind (or the mailbox is slow): one waiting run is
        # enough, so the queue cannot grow without bound.
        logger.info("operation %s still has a run waiting; schedule tick skipped", operation_id)
        return
    runs.operation_run_now(operation=operation, trigger=RunTrigger.SCHEDULE)


@shared_task(ignore_result=True)
def fail_stale_runs() -> int:
    """Beat's reaper: fail runs a dead worker left running; resend lost queued runs."""
    lost = operations.runs_requeue_lost()
    if lost:
        logger.warning("runs %s waited in the queue too long; their tasks were sent again", lost)
    return runs.runs_fail_stale()
