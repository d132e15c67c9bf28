"""The task-latency row of the bench: *Test connection* enqueued → result readable.

A warm Celery worker (the test suite's :class:`~tests.servers.worker.WorkerProcess`:
``-P solo`` on the local Redis, a queue of its own) shares the bench's
throwaway database. For each sample the bench calls
``services.connection_test_start`` for a saved IMAPS session on the bench's
Dovecot inside a committed transaction (so ``on_commit`` sends the task, as in
the view), then reads the ``ConnectionTest`` row every 10 ms until it is done.
The time from the call to the first read that sees it done is what a user
waits for, less the page's own polling delay (see ``static/mailsessions/js/app.js``).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
import uuid
from dataclasses import dataclass

POLL = 0.010
USER, PASSWORD = "latency", "latency-pw"


@dataclass
class LatencyResult:
    samples_ms: list[float]
    in_worker_ms: list[float]  # started → finished, as the worker recorded them
    failed: list[str]  # summaries of tests that did not pass

    def percentile(self, pct: float, values: list[float] | None = None) -> float:
        values = sorted(self.samples_ms if values is None else values)
        if len(values) == 1:
            return values[0]
        return statistics.quantiles(values, n=100, method="inclusive")[int(pct) - 1]


def measure_latency(server, *, samples: int, warmup: int = 3) -> LatencyResult:
    """``samples`` timed connection tests against ``server`` (a running DovecotServer)."""
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.db import transaction
    from django.test import override_settings

    from mailsessions import services
    from mailsessions.celery import app
    from mailsessions.models import ConnectionTest, Mode, TestKind, TestStatus
    from tests.factories import make_session
    from tests.servers.worker import REDIS_URL, WorkerProcess, redis_available

    if not redis_available():
        raise RuntimeError(f"Redis does not answer at {REDIS_URL} (make services starts it)")
    server.add_user(USER, PASSWORD)
    owner, _ = get_user_model().objects.get_or_create(username="latency-bench")
    session = make_session(
        owner,
        mode=Mode.READ,
        name="latency inbox",
        in_protocol="imap",
        in_encryption="ssl",
        in_host="127.0.0.1",
        in_port=server.imaps_port,
        in_username=USER,
        in_verify_certificate=False,
    )
    session.set_in_password(PASSWORD)
    session.save()

    queue = f"bench-{uuid.uuid4().hex[:8]}"
    worker = WorkerProcess(str(settings.DATABASES["default"]["NAME"]), queue)
    # The bench may run on another database (--database-url): the worker shares it.
    worker.env["DATABASE_URL"] = os.environ["DATABASE_URL"]
    previous = (app.conf.broker_url, app.conf.task_default_queue)
    app.conf.update(broker_url=REDIS_URL, task_default_queue=queue)
    result = LatencyResult([], [], [])
    print(f"latency: worker on queue {queue}, {samples} tests ...", file=sys.stderr)
    worker.start()
    try:
        # The per-minute limit protects servers from users, not from the bench.
        with override_settings(MAILSESSIONS_TEST_RATE_PER_MINUTE=10**6):
            for i in range(warmup + samples):
                started = time.perf_counter()
                with transaction.atomic():
                    test = services.connection_test_start(
                        owner=owner,
                        kind=TestKind.INCOMING,
                        protocol=session.in_protocol,
                        config=session.incoming_config(),
                        session=session,
                        session_name=session.name,
                    )
                deadline = started + 30
                while True:
                    test.refresh_from_db()
                    if test.done:
                        break
                    if time.perf_counter() > deadline:
                        raise RuntimeError(
                            "the worker did not finish a test in 30 s:\n" + worker.log[-2000:]
                        )
                    time.sleep(POLL)
                elapsed = (time.perf_counter() - started) * 1000
                if i < warmup:
                    continue
                result.samples_ms.append(elapsed)
                if test.started and test.finished:
                    result.in_worker_ms.append(
                        (test.finished - test.started).total_seconds() * 1000
                    )
                if test.status != TestStatus.PASSED:
                    result.failed.append(test.summary[:80])
        ConnectionTest.objects.filter(owner=owner).delete()
    finally:
        worker.stop()
        app.conf.update(broker_url=previous[0], task_default_queue=previous[1])
    return result
