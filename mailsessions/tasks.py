"""Celery tasks: take ids, call one service, own retries and time limits."""

from __future__ import annotations

import logging

from celery import shared_task

from mailsessions import runs, services
from mailsessions.models import Operation, Run, RunStatus, RunTrigger

logger = logging.getLogger(__name__)

RETRY_BASE = 10  # seconds; doubles per retry
RETRY_CAP = 600
MAX_RETRIES = 5


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
    try:
        run = runs.run_execute(run_id=run_id)
    except runs.MailboxBusy:
        # Not a failure: another run has the mailbox. Wait without counting.
        raise self.retry(countdown=15, max_retries=None) from None
    except Run.DoesNotExist:
        logger.warning("run %s no longer exists", run_id)
        return
    if getattr(run, "retryable", False) and self.request.retries < MAX_RETRIES:
        countdown = min(RETRY_CAP, RETRY_BASE * 2**self.request.retries)
        Run.objects.filter(pk=run.pk).update(
            status=RunStatus.QUEUED,
            error=f"{run.error}\nRetrying in {countdown} s (attempt {self.request.retries + 2}).",
        )
        raise self.retry(countdown=countdown)


@shared_task(acks_late=True, ignore_result=True)
def run_scheduled_operation(operation_id: int) -> None:
    """Beat's entry point: queue a run of the operation, if it still exists."""
    operation = Operation.objects.filter(pk=operation_id).select_related("session").first()
    if operation is None:
        logger.warning("scheduled operation %s no longer exists", operation_id)
        return
    runs.operation_run_now(operation=operation, trigger=RunTrigger.SCHEDULE)


@shared_task(ignore_result=True)
def fail_stale_runs() -> int:
    return runs.runs_fail_stale()
