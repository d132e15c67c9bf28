"""Running operations: queueing, one run per mailbox at a time, schedules.

What happens when an operation runs:

1. ``operation_run_now`` records a queued Run and, once the transaction
   commits, enqueues ``tasks.execute_run`` with the run's id (no settings, no
   credentials in the broker).
2. The task calls ``run_execute``: it takes the session's lease (one run per
   mailbox at a time), calls the kind's service through ``RUNNERS`` and
   releases the lease. The service records every outcome on the Run.
3. Beat enqueues ``tasks.run_scheduled_operation`` for scheduled operations;
   it creates a Run with trigger "schedule" and continues at step 2.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.module_loading import import_string
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

from mailsessions.models import (
    Operation,
    OperationKind,
    Run,
    RunStatus,
    RunTrigger,
    SessionLease,
)

# kind -> dotted path of the service that executes it (``(*, run) -> Run``)
RUNNERS: dict[str, str] = {
    OperationKind.READ: "mailsessions.reading.operation_read",
    OperationKind.SEND: "mailsessions.sending.operation_send",
    OperationKind.SET: "mailsessions.changing.operation_set",
}

# A run may take this long; the task's hard time limit and the lease match it.
RUN_TIME_LIMIT = 30 * 60
LEASE_MARGIN = 60


class MailboxBusy(Exception):
    """Another run works this session's mailbox; try again shortly."""


def run_start(*, operation: Operation, trigger: str = RunTrigger.MANUAL) -> Run:
    """Record that ``operation`` should run; a task or command then executes it."""
    return Run.objects.create(operation=operation, trigger=trigger, status=RunStatus.QUEUED)


def run_recorded(
    *, run: Run, kind: str, body: Callable[[], None], finish: Callable[[str], Run]
) -> tuple[Run, bool | None]:
    """The lifecycle every operation service shares.

    Marks the run running, refuses a run of another kind or one the session's
    mode forbids, calls ``body``, and hands the outcome to ``finish(error)``,
    which records it on the run and returns it reloaded. A BackendError
    becomes the run's error; anything else (a bug, the database) is recorded
    as an internal error and raised again for the task to see. Returns the
    finished run and whether the BackendError that ended it said a retry could
    help (None when no BackendError ended it).
    """
    from mailsessions.backends.base import BackendError

    Run.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING, started=timezone.now())
    operation = run.operation
    error, retryable = "", None
    try:
        if operation.kind != kind:
            raise BackendError(
                f"“{operation.name}” is not a {OperationKind(kind).label} operation."
            )
        if refusal := operation.mode_refusal():
            raise BackendError(refusal)
        body()
    except BackendError as exc:
        error, retryable = exc.message, exc.retryable
    except Exception as exc:
        finish(f"internal error ({type(exc).__name__})")
        raise
    return finish(error), retryable


def runner_for(kind: str):
    return import_string(RUNNERS[kind])


def operation_run_now(*, operation: Operation, trigger: str = RunTrigger.MANUAL) -> Run:
    """Queue a run of ``operation`` for a worker; returns the queued Run."""
    from mailsessions import tasks

    run = run_start(operation=operation, trigger=trigger)
    run_id = run.pk
    transaction.on_commit(lambda: tasks.execute_run.delay(run_id))
    return run


def run_execute(*, run_id: int) -> Run:
    """Execute a queued run under the session's lease.

    Raises MailboxBusy when another run holds the lease (the task retries
    later; the run stays queued). A run that already finished is returned as
    it is, so a redelivered task does nothing twice.
    """
    run = Run.objects.select_related("operation__session").get(pk=run_id)
    if run.done:
        return run
    session = run.operation.session
    if not lease_acquire(session_id=session.pk, run_id=run.pk):
        raise MailboxBusy(f"another run is working the mailbox of “{session.name}”")
    try:
        return runner_for(run.operation.kind)(run=run)
    finally:
        lease_release(session_id=session.pk, run_id=run.pk)


def lease_acquire(
    *, session_id: int, run_id: int, seconds: int = RUN_TIME_LIMIT + LEASE_MARGIN
) -> bool:
    now = timezone.now()
    expires = now + dt.timedelta(seconds=seconds)
    try:
        with transaction.atomic():
            _, created = SessionLease.objects.get_or_create(
                session_id=session_id, defaults={"run_id": run_id, "expires": expires}
            )
    except IntegrityError:
        created = False
    if created:
        return True
    # Take over a lease that expired (its worker died) or that this run already holds.
    taken = SessionLease.objects.filter(session_id=session_id, expires__lt=now).update(
        run_id=run_id, expires=expires
    ) or SessionLease.objects.filter(session_id=session_id, run_id=run_id).update(expires=expires)
    return bool(taken)


def lease_release(*, session_id: int, run_id: int) -> None:
    SessionLease.objects.filter(session_id=session_id, run_id=run_id).delete()


def runs_fail_stale(*, older_than: int = RUN_TIME_LIMIT + LEASE_MARGIN) -> int:
    """Mark runs left "running" by a dead worker as failed; returns how many.

    A run that is still running after its hard time limit cannot be alive:
    the worker that ran it was killed or lost.
    """
    now = timezone.now()
    cutoff = now - dt.timedelta(seconds=older_than)
    running = Run.objects.filter(status=RunStatus.RUNNING, started__lt=cutoff).update(
        status=RunStatus.FAILED,
        finished=now,
        error="The worker running this operation stopped before it finished "
        "(killed, restarted or out of time). Messages already stored are kept.",
    )
    # A broker without redelivery (the SQLite default) can lose the message of
    # a run whose worker died before taking it: never leave it queued for ever.
    queued = Run.objects.filter(status=RunStatus.QUEUED, queued__lt=now - QUEUED_TOO_LONG).update(
        status=RunStatus.FAILED,
        finished=now,
        error="No worker picked this run up in time. Is a Celery worker running?",
    )
    return running + queued


QUEUED_TOO_LONG = dt.timedelta(hours=6)


# --- schedules (django-celery-beat) --------------------------------------------


class ScheduleKind:
    NONE = "none"
    INTERVAL = "interval"
    CRONTAB = "crontab"


@dataclass(frozen=True)
class Schedule:
    kind: str = ScheduleKind.NONE
    every_minutes: int | None = None
    minute: str = "*"
    hour: str = "*"
    day_of_month: str = "*"
    month_of_year: str = "*"
    day_of_week: str = "*"
    enabled: bool = True


def operation_schedule_set(*, operation: Operation, schedule: Schedule) -> PeriodicTask | None:
    """Create, change or remove the beat entry that runs ``operation``."""
    task = operation.periodic_task
    if schedule.kind == ScheduleKind.NONE:
        if task is not None:
            Operation.objects.filter(pk=operation.pk).update(periodic_task=None)
            task.delete()
            operation.periodic_task = None
        return None
    interval = crontab = None
    if schedule.kind == ScheduleKind.INTERVAL:
        interval, _ = IntervalSchedule.objects.get_or_create(
            every=schedule.every_minutes, period=IntervalSchedule.MINUTES
        )
    else:
        crontab, _ = CrontabSchedule.objects.get_or_create(
            minute=schedule.minute,
            hour=schedule.hour,
            day_of_month=schedule.day_of_month,
            month_of_year=schedule.month_of_year,
            day_of_week=schedule.day_of_week,
            timezone=timezone.get_current_timezone_name(),
        )
    fields = {
        "name": f"mail operation {operation.pk}: {operation.name}"[:200],
        "task": "mailsessions.tasks.run_scheduled_operation",
        "args": json.dumps([operation.pk]),
        "interval": interval,
        "crontab": crontab,
        "enabled": schedule.enabled,
    }
    if task is None:
        task = PeriodicTask.objects.create(**fields)
        Operation.objects.filter(pk=operation.pk).update(periodic_task=task)
        operation.periodic_task = task
    else:
        for key, value in fields.items():
            setattr(task, key, value)
        task.save()
    return task


def schedule_of(operation: Operation) -> Schedule:
    task = operation.periodic_task
    if task is None:
        return Schedule()
    if task.interval_id:
        return Schedule(
            ScheduleKind.INTERVAL, every_minutes=task.interval.every, enabled=task.enabled
        )
    c = task.crontab
    return Schedule(
        ScheduleKind.CRONTAB,
        minute=c.minute,
        hour=c.hour,
        day_of_month=c.day_of_month,
        month_of_year=c.month_of_year,
        day_of_week=c.day_of_week,
        enabled=task.enabled,
    )


def next_run_at(operation: Operation) -> dt.datetime | None:
    """When beat will next run the operation (None when not scheduled or disabled)."""
    task = operation.periodic_task
    if task is None or not task.enabled:
        return None
    schedule = task.schedule
    last = task.last_run_at or task.date_changed or timezone.now()
    remaining = schedule.remaining_estimate(last)
    return timezone.now() + max(remaining, dt.timedelta(0))
