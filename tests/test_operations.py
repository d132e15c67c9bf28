"""Operations from the browser's point of view (Django client), run by real
Celery workers and beat.

alice owns a read-only session on Dovecot; bob must get a 404 for all of it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from mailsessions import runs
from mailsessions.models import Mode, Operation, Run, RunStatus, StoredMessage
from tests.factories import alice_session, make_session, read_operation
from tests.messages import corpus
from tests.servers.dovecot import make_message
from tests.servers.worker import REDIS_URL, ROOT, WorkerProcess, wait_until


@pytest.fixture
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


def _form(**over):
    data = {
        "name": "Read inbox",
        "folder": "INBOX",
        "after_read": "leave",
        "attachment_size_cap": str(1024 * 1024),
        "save_attachments": "on",
        "schedule_kind": "none",
        "schedule_enabled": "on",
    }
    data.update(over)
    return {k: v for k, v in data.items() if v is not None}


@pytest.mark.django_db
def test_create_read_operation_with_a_schedule(alice_client, alice, alice_mailbox):
    session = alice_session(alice, alice_mailbox)
    url = reverse("mailsessions:operation-create", args=[session.pk, "read"])
    response = alice_client.post(url, _form(schedule_kind="interval", every_minutes="5"))
    assert response.status_code == 302, response.content.decode()[:3000]
    operation = Operation.objects.get()
    task = operation.periodic_task
    assert task.interval.every == 5 and task.interval.period == IntervalSchedule.MINUTES
    assert (
        json.loads(task.args) == [operation.pk]
        and task.task == "mailsessions.tasks.run_scheduled_operation"
    )
    page = alice_client.get(operation.get_absolute_url()).content.decode()
    assert "Every 5 minutes" in page and "next run about" in page
    # Disabling keeps the entry but stops beat from running it; "none" removes it.
    edit = reverse("mailsessions:operation-edit", args=[operation.pk])
    alice_client.post(
        edit, _form(schedule_kind="interval", every_minutes="5", schedule_enabled=None)
    )
    task.refresh_from_db()
    assert task.enabled is False
    alice_client.post(edit, _form(schedule_kind="none"))
    assert not PeriodicTask.objects.filter(pk=task.pk).exists()


@pytest.mark.django_db
def test_bad_operation_input_names_the_field(alice_client, alice, alice_mailbox):
    session = alice_session(alice, alice_mailbox, protocol="pop3", security="ssl")
    url = reverse("mailsessions:operation-create", args=[session.pk, "read"])
    response = alice_client.post(url, _form(after_read="move", move_to="Archive"))
    assert "POP3 can only leave or delete" in " ".join(
        response.context["form"].errors["after_read"]
    )
    response = alice_client.post(url, _form(schedule_kind="crontab", cron_minute="99"))
    assert "cron_minute" in response.context["form"].errors
    response = alice_client.post(url, _form(max_count="abc"))
    assert "max_count" in response.context["form"].errors
    assert Operation.objects.count() == 0


@pytest.mark.django_db
def test_mode_is_enforced_on_the_form(alice_client, alice):
    session = make_session(alice, mode=Mode.READ)
    page = alice_client.get(session.get_absolute_url()).content.decode()
    assert "New Read Mail" in page and "New Send Mail" not in page
    url = reverse("mailsessions:operation-create", args=[session.pk, "send"])
    response = alice_client.post(
        url,
        {
            "name": "Send",
            "send_to": "bob@example.test",
            "send_subject": "Hi",
            "reference_mode": "none",
            "schedule_kind": "none",
        },
    )
    errors = " ".join(response.context["form"].non_field_errors())
    assert "read-only session (Read mails from inbox): it cannot send mail" in errors
    assert Operation.objects.count() == 0


@pytest.mark.django_db
def test_send_form_refuses_header_injection(alice_client, alice):
    session = make_session(alice, mode=Mode.READ_SEND)
    url = reverse("mailsessions:operation-create", args=[session.pk, "send"])
    response = alice_client.post(
        url,
        {
            "name": "Send",
            "send_to": "bob@example.test",
            "send_subject": "Hi\r\nBcc: evil@example.test",
            "reference_mode": "none",
            "schedule_kind": "none",
        },
    )
    assert "Line breaks" in " ".join(response.context["form"].errors["send_subject"])
    response = alice_client.post(
        url,
        {
            "name": "Send",
            "send_to": "bob@example.test, not an address",
            "send_subject": "Hi",
            "reference_mode": "none",
            "schedule_kind": "none",
        },
    )
    assert "is not a valid e-mail address" in " ".join(response.context["form"].errors["send_to"])
    assert Operation.objects.count() == 0


@pytest.mark.django_db
def test_another_user_gets_404_everywhere(bob_client, alice, alice_mailbox, media):
    session = alice_session(alice, alice_mailbox)
    alice_mailbox.append(
        "alice",
        "INBOX",
        corpus()["nested_mixed_attachment"]
        if "nested_mixed_attachment" in corpus()
        else next(iter(corpus().values())),
    )
    operation = read_operation(session)
    call_command("runoperation", str(operation.pk))
    run = operation.runs.get()
    message = StoredMessage.objects.first()
    urls = [
        reverse("mailsessions:operation-detail", args=[operation.pk]),
        reverse("mailsessions:operation-edit", args=[operation.pk]),
        reverse("mailsessions:operation-delete", args=[operation.pk]),
        reverse("mailsessions:run-detail", args=[run.pk]),
        reverse("mailsessions:message-list", args=[session.pk]),
        reverse("mailsessions:message-detail", args=[message.pk]),
        reverse("mailsessions:message-raw", args=[message.pk]),
        reverse("mailsessions:operation-create", args=[session.pk, "read"]),
    ]
    for url in urls:
        assert bob_client.get(url).status_code == 404, url
    assert (
        bob_client.post(reverse("mailsessions:operation-run", args=[operation.pk])).status_code
        == 404
    )
    assert Run.objects.count() == 1


@pytest.mark.django_db
def test_runoperation_command_and_message_pages(alice_client, alice, alice_mailbox, media, capsys):
    messages = corpus()
    for raw in messages.values():
        alice_mailbox.append("alice", "INBOX", raw)
    session = alice_session(alice, alice_mailbox)
    operation = read_operation(session)
    call_command("runoperation", str(operation.pk))
    out = capsys.readouterr().out
    assert "Succeeded" in out and f"stored {len(messages)}" in out
    run = operation.runs.get()
    assert run.trigger == "command" and run.stored == len(messages)
    page = alice_client.get(reverse("mailsessions:run-detail", args=[run.pk])).content.decode()
    with_attachment = StoredMessage.objects.filter(attachments__file__gt="").distinct().first()
    assert (
        with_attachment.subject[:20] in page.replace("&#x27;", "'")
        or with_attachment.subject[:20].replace("&", "&amp;") in page
    )
    detail = alice_client.get(
        reverse("mailsessions:message-detail", args=[with_attachment.pk])
    ).content.decode()
    attachment = with_attachment.attachments.exclude(file="").first()
    download = alice_client.get(reverse("mailsessions:attachment-download", args=[attachment.pk]))
    assert download.status_code == 200
    assert download["Content-Disposition"].startswith("attachment")
    assert b"".join(download.streaming_content) == attachment.file.open("rb").read()
    assert reverse("mailsessions:attachment-download", args=[attachment.pk]) in detail
    # A second run stores nothing new; a failing one exits non-zero.
    call_command("runoperation", str(operation.pk))
    assert operation.runs.first().stored == 0
    session.set_in_password("Wrong-Password-9")
    session.save()
    with pytest.raises(CommandError, match="failed"):
        call_command("runoperation", str(operation.pk))
    assert "authentication failed for user alice" in capsys.readouterr().out


@pytest.mark.django_db
def test_one_run_per_mailbox_and_expired_leases_are_taken_over(alice, alice_mailbox):
    session = alice_session(alice, alice_mailbox)
    operation = read_operation(session)
    first, second = (Run.objects.create(operation=operation) for _ in range(2))
    assert runs.lease_acquire(session_id=session.pk, run_id=first.pk)
    with pytest.raises(runs.MailboxBusy):
        runs.run_execute(run_id=second.pk)
    assert Run.objects.get(pk=second.pk).status == RunStatus.QUEUED
    # The holder died: once its lease expires, the next run takes over.
    session.lease.__class__.objects.filter(session=session).update(
        expires=timezone.now() - dt.timedelta(seconds=1)
    )
    assert runs.run_execute(run_id=second.pk).status == RunStatus.SUCCEEDED


@pytest.mark.django_db
def test_runs_left_running_by_a_dead_worker_are_failed(alice, alice_mailbox):
    operation = read_operation(alice_session(alice, alice_mailbox))
    stale = Run.objects.create(
        operation=operation,
        status=RunStatus.RUNNING,
        started=timezone.now() - dt.timedelta(hours=2),
    )
    fresh = Run.objects.create(
        operation=operation, status=RunStatus.RUNNING, started=timezone.now()
    )
    lost = Run.objects.create(operation=operation)
    Run.objects.filter(pk=lost.pk).update(queued=timezone.now() - dt.timedelta(hours=7))
    waiting = Run.objects.create(operation=operation)
    assert runs.runs_fail_stale() == 2
    lost.refresh_from_db()
    waiting.refresh_from_db()
    assert lost.status == RunStatus.FAILED and "No worker picked this run up" in lost.error
    assert waiting.status == RunStatus.QUEUED
    stale.refresh_from_db()
    fresh.refresh_from_db()
    assert stale.status == RunStatus.FAILED and "stopped before it finished" in stale.error
    assert fresh.status == RunStatus.RUNNING


@pytest.mark.django_db(transaction=True)
def test_run_now_is_executed_by_a_worker(
    alice_client, alice, alice_mailbox, media, celery_worker_process
):
    for i in range(5):
        alice_mailbox.append("alice", "INBOX", make_message(f"Worker message {i}"))
    operation = read_operation(alice_session(alice, alice_mailbox), after_read="mark_read")
    response = alice_client.post(reverse("mailsessions:operation-run", args=[operation.pk]))
    run_url = response.url
    assert run_url == reverse("mailsessions:run-detail", args=[operation.runs.get().pk])

    def finished():
        data = alice_client.get(run_url, HTTP_ACCEPT="application/json").json()
        return data if data["done"] else None

    try:
        data = wait_until(finished, timeout=30, interval=0.2)
    except AssertionError:
        raise AssertionError(celery_worker_process.log[-3000:]) from None
    assert data["status"] == "succeeded" and data["counts"]["stored"] == 5
    assert all("\\Seen" in m.flags for m in alice_mailbox.folder_messages("alice", "INBOX"))


def _start_beat(database: str, queue: str, tmp_path: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{database}",
        "CELERY_BROKER_URL": REDIS_URL,
        "CELERY_TASK_DEFAULT_QUEUE": queue,
    }
    celery = str(Path(sys.executable).with_name("celery"))
    return subprocess.Popen(
        [
            celery,
            "-A",
            "mailsessions",
            "beat",
            "--loglevel",
            "INFO",
            "--max-interval",
            "1",
            "--pidfile",
            str(tmp_path / "beat.pid"),
            "--schedule",
            str(tmp_path / "beat-schedule"),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_beat_runs_a_scheduled_operation_through_the_worker(
    alice, alice_mailbox, media, celery_worker_process, settings, tmp_path
):
    alice_mailbox.append("alice", "INBOX", make_message("Scheduled"))
    operation = read_operation(alice_session(alice, alice_mailbox))
    # The product schedules in minutes; seconds keep this test short.
    every, _ = IntervalSchedule.objects.get_or_create(every=2, period=IntervalSchedule.SECONDS)
    task = PeriodicTask.objects.create(
        name=f"test {uuid.uuid4()}",
        task="mailsessions.tasks.run_scheduled_operation",
        args=json.dumps([operation.pk]),
        interval=every,
    )
    Operation.objects.filter(pk=operation.pk).update(periodic_task=task)
    beat = _start_beat(settings.DATABASES["default"]["NAME"], celery_worker_process.queue, tmp_path)
    try:
        run = wait_until(
            lambda: Run.objects.filter(
                operation=operation, trigger="schedule", status=RunStatus.SUCCEEDED
            ).first(),
            timeout=40,
            interval=0.3,
        )
    finally:
        beat.terminate()
        output = beat.communicate(timeout=10)[0]
    assert "DatabaseScheduler" in output
    assert run.stored == 1


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_read_loses_and_duplicates_nothing(
    alice, alice_mailbox, media, settings
):
    from mailsessions.celery import app
    from tests.servers.worker import redis_available

    if not redis_available():
        pytest.skip("Redis is not running")
    total = 600
    alice_mailbox.append_many(
        "alice", "INBOX", [make_message(f"Bulk {i}", body="x" * 2000 + "\n") for i in range(total)]
    )
    operation = read_operation(alice_session(alice, alice_mailbox), after_read="mark_read")
    queue = f"kill-{uuid.uuid4().hex[:8]}"
    database = str(settings.DATABASES["default"]["NAME"])
    previous = (app.conf.broker_url, app.conf.task_default_queue, app.conf.broker_transport_options)
    app.conf.update(
        broker_url=REDIS_URL,
        task_default_queue=queue,
        broker_transport_options={"visibility_timeout": 3},
    )
    env_extra = {"CELERY_VISIBILITY_TIMEOUT": "3", "MEDIA_ROOT": str(media)}
    worker = WorkerProcess(database, queue)
    worker.env.update(env_extra)
    worker.start()
    try:
        run = runs.operation_run_now(operation=operation)
        wait_until(
            lambda: StoredMessage.objects.filter(session=operation.session).count() > 0,
            timeout=30,
            interval=0.02,
        )
        os.kill(worker.process.pid, signal.SIGKILL)
        worker.process.wait(5)
        stored_at_kill = StoredMessage.objects.count()
        assert stored_at_kill < total, "the run finished before the kill; make the mailbox bigger"
        # Nothing was marked read on the server without having been stored first.
        seen = sum("\\Seen" in m.flags for m in alice_mailbox.folder_messages("alice", "INBOX"))
        assert seen <= stored_at_kill
        # The broker redelivers an unacknowledged task once its visibility
        # timeout has passed; the new worker restores such tasks on start.
        time.sleep(3.5)
        worker = WorkerProcess(database, queue)
        worker.env.update(env_extra)
        worker.start()
        done = wait_until(
            lambda: Run.objects.filter(pk=run.pk, status=RunStatus.SUCCEEDED).first(),
            timeout=60,
            interval=0.3,
        )
    finally:
        worker.stop()
        app.conf.update(
            broker_url=previous[0],
            task_default_queue=previous[1],
            broker_transport_options=previous[2],
        )
    subjects = list(StoredMessage.objects.values_list("subject", flat=True))
    assert len(subjects) == total and len(set(subjects)) == total
    assert done.status == RunStatus.SUCCEEDED
    assert all("\\Seen" in m.flags for m in alice_mailbox.folder_messages("alice", "INBOX"))


@pytest.mark.django_db
def test_send_operation_takes_an_uploaded_attachment_within_the_cap(
    alice_client, alice, media, settings
):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from mailsessions.models import OperationAttachment

    settings.MAILSESSIONS_MAX_UPLOAD_SIZE = 1000
    session = make_session(alice, mode=Mode.READ_SEND)
    url = reverse("mailsessions:operation-create", args=[session.pk, "send"])
    data = {
        "name": "Report",
        "send_to": "Bob <bob@example.test>",
        "send_subject": "Report",
        "reference_mode": "none",
        "schedule_kind": "none",
    }
    too_big = SimpleUploadedFile("big.bin", b"x" * 1001)
    response = alice_client.post(url, {**data, "add_attachment": too_big})
    assert "at most" in " ".join(response.context["form"].errors["add_attachment"])
    assert Operation.objects.count() == 0
    upload = SimpleUploadedFile(
        "../../Bericht März.pdf", b"%PDF-1.4 small", content_type="application/pdf"
    )
    response = alice_client.post(url, {**data, "add_attachment": upload})
    assert response.status_code == 302
    attachment = OperationAttachment.objects.get()
    assert attachment.filename == "Bericht März.pdf" and attachment.size == 14
    assert Path(attachment.file.path).resolve().is_relative_to(Path(media).resolve())


@pytest.mark.django_db
def test_a_set_mail_run_links_the_stored_messages_it_changed(
    alice_client, alice, alice_mailbox, media
):
    from mailsessions import changing, reading, runs

    for i in range(3):
        alice_mailbox.append("alice", "INBOX", make_message(f"Invoice {i}"))
    session = alice_session(alice, alice_mailbox)
    read = read_operation(session)
    reading.operation_read(run=runs.run_start(operation=read))
    flag = Operation(
        session=session,
        name="Flag invoices",
        kind="set",
        set_action="flag",
        subject_contains="Invoice 1",
    )
    flag.full_clean()
    flag.save()
    run = changing.operation_set(run=runs.run_start(operation=flag))
    assert run.status == RunStatus.SUCCEEDED and run.changed == 1
    assert [m.subject for m in run.touched.all()] == ["Invoice 1"]
    page = alice_client.get(reverse("mailsessions:run-detail", args=[run.pk])).content.decode()
    assert (
        "Stored messages this run changed" in page
        and "Invoice 1" in page
        and "Invoice 2" not in page
    )
