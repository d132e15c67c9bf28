"""A real Celery worker process on the local Redis, sharing the test database.

The test database is a SQLite file (see settings), so the worker process
reads and writes the same rows as the test. Each test session uses its own
queue name, so stray workers or other runs on the same Redis never take our
tasks.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
ROOT = Path(__file__).resolve().parents[2]


def redis_available() -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_timeout=1).ping())
    except redis.RedisError:
        return False


class WorkerProcess:
    def __init__(self, database: str, queue: str) -> None:
        self.queue = queue
        self.env = {
            **os.environ,
            "DATABASE_URL": f"sqlite:///{database}",
            "CELERY_BROKER_URL": REDIS_URL,
            "CELERY_TASK_DEFAULT_QUEUE": queue,
            "DJANGO_SETTINGS_MODULE": "mailsessions.settings",
        }
        self.process: subprocess.Popen | None = None
        self.output: list[str] = []
        self._ready = threading.Event()

    def start(self, timeout: float = 30) -> None:
        celery = str(Path(sys.executable).with_name("celery"))
        self.process = subprocess.Popen(
            [
                celery,
                "-A",
                "mailsessions",
                "worker",
                "-P",
                "solo",
                "-Q",
                self.queue,
                "--loglevel",
                "INFO",
                "--without-heartbeat",
                "--without-gossip",
                "--without-mingle",
                "-n",
                f"test-{self.queue}@%h",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(timeout):
            self.stop()
            raise RuntimeError("the Celery worker did not start:\n" + "".join(self.output[-40:]))

    def _read(self) -> None:
        assert self.process and self.process.stdout
        for line in self.process.stdout:
            self.output.append(line)
            if " ready." in line:
                self._ready.set()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    @property
    def log(self) -> str:
        return "".join(self.output)


@pytest.fixture(scope="session")
def celery_worker_process(django_db_setup, django_db_blocker) -> Iterator[WorkerProcess]:
    """A worker process executing tasks sent by the test process."""
    if not redis_available():
        pytest.skip(f"Redis does not answer at {REDIS_URL} (make test starts it)")
    from django.conf import settings

    from mailsessions.celery import app

    database = settings.DATABASES["default"]["NAME"]
    queue = f"test-{uuid.uuid4().hex[:8]}"
    previous = (app.conf.broker_url, app.conf.task_default_queue)
    app.conf.update(broker_url=REDIS_URL, task_default_queue=queue)
    worker = WorkerProcess(str(database), queue)
    worker.start()
    yield worker
    worker.stop()
    app.conf.update(broker_url=previous[0], task_default_queue=previous[1])


def wait_until(predicate, timeout: float = 30, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")
