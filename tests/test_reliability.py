"""Faults survived: real Celery workers, beat, Redis and Dovecot, broken on purpose.

alice owns the sessions here. Between her worker and Dovecot sits a
``FaultyProxy`` that drops or stalls the first connection mid-fetch; Redis is
killed and restarted under a running beat; two workers share thirty schedules.
Each test says which promise of docs/reliability.md it proves.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core import mail
from django.db.models import Count
from django.urls import reverse
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from mailsessions import operations, runs, tasks
from mailsessions.models import Mode, Operation, Run, RunStatus, StoredMessage
from tests.factories import alice_session, make_session, read_operation
from tests.servers.dovecot import make_message
from tests.servers.smtp import USERS as SMTP_USERS
from tests.servers.worker import REDIS_URL, ROOT, WorkerProcess, redis_available, wait_until

HOST = "127.0.0.1"
DONE = (RunStatus.SUCCEEDED, RunStatus.PARTLY_FAILED, RunStatus.FAILED)


# --- a TCP proxy that breaks the first connection ----------------------------------


class FaultyProxy:
    """Forwards loopback TCP connections to ``upstream``; the first connection
    breaks once the server has sent ``after`` bytes:

    - ``fault="drop"``: the proxy closes both sides (a server or NAT dropping
      the link mid-fetch);
    - ``fault="stall"``: the proxy stops forwarding and holds the connection
      open (a server that stops answering), until the client gives up.

    Later connections are forwarded untouched. ``first_bytes`` is what the
    server sent on the first connection before the fault.
    """

    def __init__(self, upstream: int, *, fault: str, after: int) -> None:
        assert fault in ("drop", "stall")
        self.upstream, self.fault, self.after = upstream, fault, after
        self.connections = 0
        self.first_bytes = b""
        self.faulted = threading.Event()
        self._listener = socket.create_server((HOST, 0))
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()

    def __enter__(self) -> FaultyProxy:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            index = self.connections
            self.connections += 1
            threading.Thread(target=self._serve, args=(client, index), daemon=True).start()

    def _serve(self, client: socket.socket, index: int) -> None:
        server = socket.create_connection((HOST, self.upstream), timeout=30)
        closed = threading.Event()

        def upstream_pump() -> None:  # client -> server, untouched
            try:
                while data := client.recv(65536):
                    server.sendall(data)
            except OSError:
                pass
            closed.set()

        threading.Thread(target=upstream_pump, daemon=True).start()
        sent = 0
        try:
            while data := server.recv(65536):
                if index == 0 and sent + len(data) >= self.after:
                    client.sendall(data[: self.after - sent])
                    self.first_bytes += data[: self.after - sent]
                    self.faulted.set()
                    if self.fault == "stall":
                        closed.wait(60)  # say nothing until the client hangs up
                    break
                client.sendall(data)
                if index == 0:
                    self.first_bytes += data
                sent += len(data)
        except OSError:
            pass
        finally:
            for sock in (client, server):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()


# --- fixtures ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def fast_worker(django_db_setup, django_db_blocker, tmp_path_factory) -> Iterator[WorkerProcess]:
    """A worker that retries after 1 s (not 10) and gives up on a silent
    server after 1 s (not 15), so faults resolve within a test."""
    if not redis_available():
        pytest.skip(f"Redis does not answer at {REDIS_URL}")
    from django.conf import settings

    from mailsessions.celery import app

    queue = f"reliability-{uuid.uuid4().hex[:8]}"
    previous = (app.conf.broker_url, app.conf.task_default_queue)
    app.conf.update(broker_url=REDIS_URL, task_default_queue=queue)
    worker = WorkerProcess(str(settings.DATABASES["default"]["NAME"]), queue)
    worker.env.update(
        MAILSESSIONS_RETRY_BASE_SECONDS="1",
        MAILSESSIONS_NETWORK_TIMEOUT="1",
        MEDIA_ROOT=str(tmp_path_factory.mktemp("reliability-media")),
    )
    worker.start()
    yield worker
    worker.stop()
    app.conf.update(broker_url=previous[0], task_default_queue=previous[1])


@pytest.fixture
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


def _plain_session(owner, port: int, *, name: str = "Alice via proxy", user: str = "alice"):
    """A session on Dovecot's plaintext IMAP port (or a proxy in front of it)."""
    from tests.servers.dovecot import PERSONAS

    session = make_session(
        owner,
        mode=Mode.READ,
        name=name,
        in_protocol="imap",
        in_encryption="none",
        in_allow_plaintext=True,
        in_host=HOST,
        in_port=port,
        in_username=user,
        in_verify_certificate=False,
    )
    session.set_in_password(PERSONAS.get(user, ""))
    session.save()
    return session


def _wait_done(run: Run, worker: WorkerProcess, timeout: float = 40) -> Run:
    try:
        return wait_until(
            lambda: Run.objects.filter(pk=run.pk, status__in=DONE).first(),
            timeout=timeout,
            interval=0.1,
        )
    except AssertionError:
        run.refresh_from_db()
        raise AssertionError(f"{run!r} {run.error!r}\n{worker.log[-3000:]}") from None


def _expected_countdown() -> str:
    # The worker runs with MAILSESSIONS_RETRY_BASE_SECONDS=1.
    return "1s"


# --- 1. dropped and silent connections are retried; permanent errors are not ---------


@pytest.mark.parametrize("fault", ["drop", "stall"])
@pytest.mark.django_db(transaction=True)
def test_a_broken_connection_mid_fetch_is_retried_and_stores_everything_once(
    fault, alice, alice_mailbox, fast_worker
):
    total = 40
    alice_mailbox.append_many(
        "alice",
        "INBOX",
        [make_message(f"{fault} {i}", body="y" * 3000 + "\n") for i in range(total)],
    )
    with FaultyProxy(alice_mailbox.imap_port, fault=fault, after=40_000) as proxy:
        operation = read_operation(_plain_session(alice, proxy.port), after_read="mark_read")
        run = runs.operation_run_now(operation=operation)
        done = _wait_done(run, fast_worker)
    # The fault hit while messages were being fetched, not at login.
    assert proxy.faulted.is_set() and b" FETCH (" in proxy.first_bytes
    assert proxy.connections >= 2
    assert done.status == RunStatus.SUCCEEDED, done.error
    subjects = list(StoredMessage.objects.values_list("subject", flat=True))
    assert len(subjects) == total and len(set(subjects)) == total
    assert all("\\Seen" in m.flags for m in alice_mailbox.folder_messages("alice", "INBOX"))
    assert f"retry: Retry in {_expected_countdown()}" in fast_worker.log


@pytest.mark.django_db(transaction=True)
def test_a_connection_dropped_after_the_first_batch_is_retried_too(
    alice, alice_mailbox, fast_worker
):
    total = 400  # the IMAP backend fetches 300 per batch
    messages = [make_message(f"Batch {i}", body="z" * 1000 + "\n") for i in range(total)]
    alice_mailbox.append_many("alice", "INBOX", messages)
    # Past the first batch (and its FETCH overhead), inside the second.
    cut = sum(len(m) for m in messages[:300]) + 60_000
    with FaultyProxy(alice_mailbox.imap_port, fault="drop", after=cut) as proxy:
        operation = read_operation(_plain_session(alice, proxy.port))
        run = runs.operation_run_now(operation=operation)
        done = _wait_done(run, fast_worker, timeout=60)
    assert proxy.faulted.is_set()
    assert StoredMessage.objects.count() == total and done.status == RunStatus.SUCCEEDED


@pytest.mark.django_db(transaction=True)
def test_permanent_errors_fail_at_once_with_the_reason(alice, alice_mailbox, fast_worker):
    wrong = _plain_session(alice, alice_mailbox.imap_port, name="Wrong password")
    wrong.set_in_password("Not-Alices-Password-1")
    wrong.save()
    bad_password = runs.operation_run_now(operation=read_operation(wrong))
    no_folder = runs.operation_run_now(
        operation=read_operation(
            _plain_session(alice, alice_mailbox.imap_port, name="Missing folder"),
            folder="No/Such/Folder",
        )
    )
    started = time.monotonic()
    bad_password = _wait_done(bad_password, fast_worker)
    no_folder = _wait_done(no_folder, fast_worker)
    assert time.monotonic() - started < 10  # no backoff waited
    assert bad_password.status == RunStatus.FAILED
    assert "authentication failed" in bad_password.error.lower()
    assert no_folder.status == RunStatus.FAILED and "No/Such/Folder" in no_folder.error
    for run in (bad_password, no_folder):
        # Exactly one attempt: a retried run says "Retrying in N s (attempt 2)".
        assert "Retrying" not in run.error
        assert "Not-Alices-Password-1" not in run.error


@pytest.mark.django_db(transaction=True)
def test_runs_whose_task_was_lost_are_sent_again(alice, alice_mailbox, fast_worker):
    """A queued run whose message a restarted broker lost is found by the
    reaper task and executed; a recent queued run is left alone."""
    alice_mailbox.append("alice", "INBOX", make_message("Lost and found"))
    operation = read_operation(_plain_session(alice, alice_mailbox.imap_port))
    lost = Run.objects.create(operation=operation, status=RunStatus.QUEUED)
    Run.objects.filter(pk=lost.pk).update(queued=timezone.now() - dt.timedelta(hours=1))
    recent = Run.objects.create(operation=operation, status=RunStatus.QUEUED)
    assert operations.runs_requeue_lost() == [lost.pk]
    assert _wait_done(lost, fast_worker).status == RunStatus.SUCCEEDED
    assert Run.objects.get(pk=recent.pk).status == RunStatus.QUEUED
    # A schedule does not wait for ever behind a lost run.
    assert operations.operation_has_pending_run(operation=operation)  # "recent"
    Run.objects.filter(pk=recent.pk).update(queued=timezone.now() - dt.timedelta(hours=1))
    assert not operations.operation_has_pending_run(operation=operation)


# --- 2. Redis restarted under beat and a worker ------------------------------------


class RedisServer:
    """A throwaway redis-server without persistence (the worst case: a restart
    loses every queued message)."""

    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind((HOST, 0))
            self.port = s.getsockname()[1]
        self.url = f"redis://{HOST}:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", HOST, "--save", ""]
            + ["--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import redis

        wait_until(lambda: _ping(redis.Redis.from_url(self.url, socket_timeout=0.5)), timeout=10)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(5)


def _ping(client) -> bool:
    import redis

    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def _start_beat(database: str, broker: str, queue: str, tmp_path: Path) -> subprocess.Popen:
    celery = str(Path(sys.executable).with_name("celery"))
    return subprocess.Popen(
        [celery, "-A", "mailsessions", "beat", "--loglevel", "INFO", "--max-interval", "1"]
        + ["--pidfile", str(tmp_path / "beat.pid"), "--schedule", str(tmp_path / "beat-schedule")],
        cwd=ROOT,
        env={
            **os.environ,
            "DATABASE_URL": f"sqlite:///{database}",
            "CELERY_BROKER_URL": broker,
            "CELERY_TASK_DEFAULT_QUEUE": queue,
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _stop(process: subprocess.Popen) -> str:
    process.terminate()
    try:
        return process.communicate(timeout=10)[0] or ""
    except subprocess.TimeoutExpired:
        process.kill()
        return process.communicate(timeout=5)[0] or ""


def _schedule_every_2_seconds(operation: Operation) -> PeriodicTask:
    # The product schedules in minutes; seconds keep these tests short.
    every, _ = IntervalSchedule.objects.get_or_create(every=2, period=IntervalSchedule.SECONDS)
    task = PeriodicTask.objects.create(
        name=f"test {uuid.uuid4()}",
        task="mailsessions.tasks.run_scheduled_operation",
        args=json.dumps([operation.pk]),
        interval=every,
    )
    Operation.objects.filter(pk=operation.pk).update(periodic_task=task)
    return task


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_schedules_keep_running_after_redis_restarts(
    alice, alice_mailbox, settings, tmp_path, media
):
    if not Path("/usr/bin/redis-server").exists() and not _which("redis-server"):
        pytest.skip("redis-server is not installed")
    database = str(settings.DATABASES["default"]["NAME"])
    queue = f"restart-{uuid.uuid4().hex[:8]}"
    redis_server = RedisServer()
    redis_server.start()
    operation = read_operation(_plain_session(alice, alice_mailbox.imap_port))
    _schedule_every_2_seconds(operation)
    worker = WorkerProcess(database, queue)
    worker.env.update(CELERY_BROKER_URL=redis_server.url, MEDIA_ROOT=str(media))
    beat = None
    try:
        worker.start()
        beat = _start_beat(database, redis_server.url, queue, tmp_path)

        def succeeded_since(moment):
            return Run.objects.filter(
                operation=operation,
                trigger="schedule",
                status=RunStatus.SUCCEEDED,
                queued__gt=moment,
            ).first()

        wait_until(lambda: succeeded_since(timezone.now() - dt.timedelta(hours=1)), timeout=40)
        # Beat copied the built-in reaper into its database schedule.
        reaper = PeriodicTask.objects.get(name="fail-stale-runs")
        assert reaper.task == "mailsessions.tasks.fail_stale_runs" and reaper.enabled

        # Kill Redis between two runs, so the restart does not lose a queued one
        # (that case is test_runs_whose_task_was_lost_are_sent_again).
        wait_until(
            lambda: (
                not Run.objects.filter(status__in=[RunStatus.QUEUED, RunStatus.RUNNING]).exists()
            ),
            timeout=10,
            interval=0.02,
        )
        redis_server.kill()
        alice_mailbox.append("alice", "INBOX", make_message("While Redis was down"))
        time.sleep(3)  # a tick or two of beat with no broker
        redis_server.start()
        restarted = timezone.now()
        run = wait_until(lambda: succeeded_since(restarted), timeout=60, interval=0.3)
        assert worker.process.poll() is None and beat.poll() is None
    except AssertionError:
        beat_log = _stop(beat) if beat is not None else ""
        raise AssertionError(f"worker:\n{worker.log[-3000:]}\nbeat:\n{beat_log[-3000:]}") from None
    finally:
        if beat is not None and beat.poll() is None:
            _stop(beat)
        worker.stop()
        redis_server.kill()
    assert StoredMessage.objects.filter(subject="While Redis was down").count() == 1
    assert run.status == RunStatus.SUCCEEDED
    # Nothing is left running for ever (the reaper fails what a dead worker left).
    assert not Run.objects.filter(status=RunStatus.RUNNING).exists()


def _which(name: str) -> str | None:
    import shutil

    return shutil.which(name)


# --- 3. two workers, thirty schedules ----------------------------------------------


def _queue_length(client, queue: str) -> int:
    # Celery's Redis transport keeps one list per priority step: queue, queue\x06\x163, ...
    return sum(client.llen(key) for key in client.keys(f"{queue}*") if client.type(key) == b"list")


def _most_pending_runs_of_one_operation() -> int:
    counts = (
        Run.objects.filter(status__in=[RunStatus.QUEUED, RunStatus.RUNNING])
        .values("operation")
        .annotate(n=Count("pk"))
        .values_list("n", flat=True)
    )
    return max(counts, default=0)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_two_workers_and_thirty_schedules_never_share_a_mailbox(
    alice, dovecot, settings, tmp_path, media
):
    import redis

    if not redis_available():
        pytest.skip(f"Redis does not answer at {REDIS_URL}")
    users = {f"load{i:02d}": f"load-pw-{i:02d}" for i in range(30)}
    dovecot.add_users(users)
    for user in users:
        dovecot.reset_mailbox(user)
        dovecot.append_many(user, "INBOX", [make_message(f"{user} {n}") for n in range(3)])
    operations_ = []
    for user, password in users.items():
        session = _plain_session(alice, dovecot.imap_port, name=f"Load {user}", user=user)
        session.set_in_password(password)
        session.save()
        operation = read_operation(session)
        _schedule_every_2_seconds(operation)
        operations_.append(operation)

    database = str(settings.DATABASES["default"]["NAME"])
    queue = f"load-{uuid.uuid4().hex[:8]}"
    workers = [WorkerProcess(database, queue) for _ in range(2)]
    for worker in workers:
        worker.env.update(MEDIA_ROOT=str(media))
        worker.start()
    beat = None
    client = redis.Redis.from_url(REDIS_URL)
    lengths: list[int] = []
    pending: list[int] = []
    try:
        beat = _start_beat(database, REDIS_URL, queue, tmp_path)
        end = time.monotonic() + 20
        while time.monotonic() < end:
            lengths.append(_queue_length(client, queue))
            pending.append(_most_pending_runs_of_one_operation())
            time.sleep(0.5)
        beat_log = _stop(beat)
        # Drain: every run that was queued finishes.
        wait_until(
            lambda: (
                not Run.objects.filter(status__in=[RunStatus.QUEUED, RunStatus.RUNNING]).exists()
            ),
            timeout=60,
            interval=0.3,
        )
    except AssertionError:
        stuck = list(Run.objects.exclude(status__in=DONE).values("pk", "status", "queued"))
        raise AssertionError(
            f"stuck runs: {stuck[:10]}\n{workers[0].log[-2000:]}\n{workers[1].log[-2000:]}"
        ) from None
    finally:
        if beat is not None and beat.poll() is None:
            _stop(beat)
        for worker in workers:
            worker.stop()
        client.delete(*client.keys(f"{queue}*") or [queue])

    all_runs = list(Run.objects.filter(trigger="schedule").order_by("started"))
    assert "DatabaseScheduler" in beat_log
    assert all(r.status == RunStatus.SUCCEEDED for r in all_runs), [
        (r.pk, r.status, r.error) for r in all_runs if r.status != RunStatus.SUCCEEDED
    ][:5]
    # Both workers took part.
    assert all("succeeded in" in w.log for w in workers)
    by_operation: dict[int, list[Run]] = {}
    for r in all_runs:
        by_operation.setdefault(r.operation_id, []).append(r)
    # Several cycles for every schedule ...
    assert set(by_operation) == {op.pk for op in operations_}
    assert min(len(v) for v in by_operation.values()) >= 3, {
        k: len(v) for k, v in by_operation.items()
    }
    # ... and never two runs in one mailbox at the same time.
    for operation_runs in by_operation.values():
        for earlier, later in zip(operation_runs, operation_runs[1:], strict=False):
            assert earlier.finished <= later.started, (earlier, later)
    # Every message stored once per mailbox.
    assert StoredMessage.objects.count() == 30 * 3
    # The queue stays bounded although the workers cannot keep up with 15 runs
    # a second: a schedule never has more than one run waiting, so the queue
    # holds at most one run per schedule plus beat's ticks of a cycle or two.
    assert max(pending) <= 1, pending
    assert max(lengths) <= 3 * len(operations_), lengths


# --- 4. failing schedules are flagged and their owner is told once --------------------


def _failing_runs(operation: Operation, n: int) -> list[Run]:
    """Execute ``n`` runs through the real task code, in this process."""
    done = []
    for _ in range(n):
        run = Run.objects.create(operation=operation)
        tasks.execute_run.apply(args=[run.pk])
        done.append(Run.objects.get(pk=run.pk))
    return done


def _sending_session(alice, dovecot, smtp, *, password: str):
    session = make_session(
        alice,
        mode=Mode.READ_SEND,
        name="Alice sends",
        in_protocol="imap",
        in_encryption="ssl",
        in_host=HOST,
        in_port=dovecot.port_for("imap", "ssl"),
        in_username="alice",
        in_verify_certificate=False,
        out_host=HOST,
        out_port=smtp.port,
        out_encryption="none",
        out_allow_plaintext=True,
        out_verify_certificate=False,
        out_use_different_credentials=True,
        out_username="alice",
        out_sender="alerts@example.test",
        test_mail_to="alice@example.test",
    )
    session.set_in_password(password)
    session.set_out_password(SMTP_USERS["alice"])
    session.save()
    return session


@pytest.mark.django_db
def test_a_failing_schedule_mails_its_owner_once_through_the_sessions_smtp(
    alice, alice_mailbox, smtp_auth_plain, alice_client, carol_client
):
    smtp_auth_plain.clear()
    session = _sending_session(alice, alice_mailbox, smtp_auth_plain, password="Wrong-Pw-4711")
    operation = read_operation(session)
    statuses = [r.status for r in _failing_runs(operation, 2)]
    assert statuses == [RunStatus.FAILED] * 2 and smtp_auth_plain.messages == []
    assert not operations.operation_failing(operation=operation)

    _failing_runs(operation, 3)  # the 3rd failure notifies; the 4th and 5th do not
    time.sleep(0.2)
    assert len(smtp_auth_plain.messages) == 1
    notice = smtp_auth_plain.messages[0]
    assert notice.rcpt_tos == ("alice@example.test",) and notice.auth_user == "alice"
    text = notice.content.decode()
    assert "Read inbox" in text and "Alice sends" in text
    assert "authentication failed" in text.lower()
    assert "Wrong-Pw-4711" not in text and SMTP_USERS["alice"] not in text

    # Flagged on the session page, the operation page and the admin changelist.
    assert "keeps failing" in alice_client.get(session.get_absolute_url()).content.decode()
    assert "all failed" in alice_client.get(operation.get_absolute_url()).content.decode()
    changelist = carol_client.get(reverse("admin:mailsessions_operation_changelist"))
    assert 'class="field-failing"><img src="/static/admin/img/icon-yes.svg"' in (
        changelist.content.decode()
    )

    # A success ends the streak and the flag; the next streak notifies again.
    session.set_in_password(alice_mailbox.passwords["alice"])
    session.save()
    assert _failing_runs(operation, 1)[0].status == RunStatus.SUCCEEDED
    assert not operations.operation_failing(operation=operation)
    changelist = carol_client.get(reverse("admin:mailsessions_operation_changelist"))
    assert 'class="field-failing"><img src="/static/admin/img/icon-no.svg"' in (
        changelist.content.decode()
    )
    session.set_in_password("Wrong-Pw-4711")
    session.save()
    _failing_runs(operation, 3)
    smtp_auth_plain.wait_for(2)
    assert len(smtp_auth_plain.messages) == 2


@pytest.mark.django_db
def test_a_read_only_session_is_reported_through_the_sites_mail_settings(
    alice, alice_mailbox, smtp_noauth, settings
):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = HOST, smtp_noauth.port
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    settings.DEFAULT_FROM_EMAIL = "mailsessions@example.test"
    smtp_noauth.clear()
    operation = read_operation(alice_session(alice, alice_mailbox, password="Wrong-Pw-4712"))
    _failing_runs(operation, 4)
    received = smtp_noauth.wait_for(1)
    time.sleep(0.2)
    assert len(smtp_noauth.messages) == 1
    assert received[0].mail_from == "mailsessions@example.test"
    assert received[0].rcpt_tos == ("alice@example.test",)
    assert b"Read inbox" in received[0].content and b"Wrong-Pw-4712" not in received[0].content


@pytest.mark.django_db
def test_notices_can_be_turned_off(alice, alice_mailbox, settings):
    settings.MAILSESSIONS_NOTIFY_FAILING = False
    operation = read_operation(alice_session(alice, alice_mailbox, password="Wrong-Pw-4713"))
    _failing_runs(operation, 3)
    assert operations.operation_failing(operation=operation)
    assert mail.outbox == []
    settings.MAILSESSIONS_NOTIFY_FAILING = True
    Run.objects.filter(operation=operation).delete()
    _failing_runs(operation, 3)
    assert len(mail.outbox) == 1 and "keeps failing" in mail.outbox[0].subject
