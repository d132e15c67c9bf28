"""Saving and deleting operations, and telling when a schedule keeps failing."""

from __future__ import annotations

from django.core.files.uploadedfile import UploadedFile
from django.db import transaction

from mailsessions import runs
from mailsessions.mime import safe_filename
from mailsessions.models import Operation, OperationAttachment, RunStatus

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
        operation.runs.filter(
            status__in=[RunStatus.SUCCEEDED, RunStatus.PARTLY_FAILED, RunStatus.FAILED]
        ).values_list("status", flat=True)[:last]
    )
    return len(statuses) == last and all(s == RunStatus.FAILED for s in statuses)
