"""Run one saved operation right here, synchronously."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from mailsessions import runs
from mailsessions.models import Operation, Run, RunStatus, RunTrigger


class Command(BaseCommand):
    help = "Run an operation now in this process; exits non-zero unless it succeeded."

    def add_arguments(self, parser):
        parser.add_argument("operation_id", type=int)

    def handle(self, *args, operation_id: int, **options):
        try:
            operation = Operation.objects.select_related("session").get(pk=operation_id)
        except Operation.DoesNotExist:
            raise CommandError(f"no operation with id {operation_id}") from None
        run = runs.run_start(operation=operation, trigger=RunTrigger.COMMAND)
        try:
            run = runs.run_execute(run_id=run.pk)
        except runs.MailboxBusy as exc:
            Run.objects.filter(pk=run.pk).update(status=RunStatus.FAILED, error=str(exc))
            raise CommandError(str(exc)) from None
        counts = ", ".join(
            f"{name} {getattr(run, name)}"
            for name in ("found", "read", "stored", "duplicates", "sent", "changed", "failed")
            if getattr(run, name)
        )
        self.stdout.write(
            f"{operation.name}: {run.get_status_display()} in {run.duration_ms} ms ({counts or 'nothing to do'})"
        )
        if run.error:
            self.stdout.write(run.error)
        if run.status != RunStatus.SUCCEEDED:
            raise CommandError(f"the run {run.get_status_display().lower()}")
