"""The web rows of the bench: pages under gunicorn with concurrent clients (``wrk``).

Seeds one user with ``sessions`` saved mail sessions (through the service the
wizard uses) in the bench's throwaway database, starts gunicorn with the
Procfile's own ``web`` command line (on a free port, ``DEBUG=False``), signs
the user in by a session cookie, and runs ``wrk --latency`` against the
session list, the wizard's first page and, as the floor, ``/healthz``. Each page is fetched once first and
checked (status 200, one table row per session), so a login redirect can never
be timed as a fast page.

Needs ``wrk`` (``scripts/bench-deps.sh``).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = (
    ("web: session list (GET /sessions/)", "/sessions/"),
    ("web: wizard first page (GET /sessions/new/)", "/sessions/new/"),
    # The same stack with no session, no template and one SELECT 1: what any page
    # pays here (gunicorn, middleware, loopback), the "transport alone" of the web rows.
    ("web: floor, no session (GET /healthz)", "/healthz"),
)
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


@dataclass
class WrkResult:
    requests: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    rate: float
    errors: str  # socket errors and non-2xx/3xx answers, as wrk reports them; "" if none


def parse_wrk(output: str) -> WrkResult:
    """The figures ``wrk --latency`` prints (latency distribution, totals, rate)."""

    def latency(pct: str) -> float:
        m = re.search(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s|m)\s*$", output, re.M)
        if m is None:
            raise ValueError(f"no {pct}% latency in wrk output:\n{output}")
        return float(m.group(1)) * _UNITS[m.group(2)]

    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", output)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if total is None or rate is None:
        raise ValueError(f"unexpected wrk output:\n{output}")
    errors = [
        line.strip()
        for line in output.splitlines()
        if line.strip().startswith(("Socket errors", "Non-2xx"))
    ]
    return WrkResult(
        requests=int(total.group(1)),
        seconds=float(total.group(2)) * _UNITS[total.group(3)] / 1e3,
        p50_ms=latency("50"),
        p90_ms=latency("90"),
        p99_ms=latency("99"),
        rate=float(rate.group(1)),
        errors="; ".join(errors),
    )


def seed(sessions: int):
    """A user with ``sessions`` varied saved sessions; returns the user."""
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from mailsessions.models import MailSession, Mode
    from tests.factories import make_session

    user, _ = get_user_model().objects.get_or_create(username="web-bench")
    modes = (Mode.READ_SEND, Mode.READ, Mode.SEND)
    have = MailSession.objects.filter(owner=user).count()
    for i in range(have, sessions):
        make_session(
            user,
            name=f"Mailbox {i:04d} — support team {i % 17}",
            mode=modes[i % 3],
            in_protocol=("imap", "pop3")[i % 2],
            in_host=f"imap{i}.example.test",
            in_verify_certificate=i % 5 != 0,
        )
    # A third tested (passed or failed), so the list shows every badge kind.
    ids = list(MailSession.objects.filter(owner=user).order_by("id").values_list("id", flat=True))
    now = timezone.now()
    MailSession.objects.filter(id__in=ids[0::6]).update(
        last_test_at=now, last_test_outcome="passed", last_test_summary="All stages passed."
    )
    MailSession.objects.filter(id__in=ids[1::6]).update(
        last_test_at=now, last_test_outcome="failed", last_test_summary="Login failed."
    )
    return user


def session_cookie(user) -> str:
    """A ``Cookie`` header value for a signed-in ``user`` (a real database session)."""
    from django.conf import settings
    from django.test import Client

    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


def procfile_web(port: int) -> list[str]:
    """The Procfile's ``web`` command for ``port``, with this venv's gunicorn."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.startswith("web:"):
            command = line.split(":", 1)[1].replace("${WEB_PORT:-8000}", str(port))
            argv = shlex.split(command)
            argv[0] = str(Path(sys.executable).with_name(Path(argv[0]).name))
            return argv
    raise RuntimeError("the Procfile has no web: line")


@contextlib.contextmanager
def gunicorn(port: int, log: Path) -> Iterator[str]:
    """The web process as the Procfile runs it, in production mode; yields its base URL."""
    env = {**os.environ, "DEBUG": "False", "ALLOWED_HOSTS": "127.0.0.1"}
    with open(log, "w") as out:
        process = subprocess.Popen(
            procfile_web(port), cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except (OSError, urllib.error.URLError):
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def fetch(url: str, cookie: str) -> str:
    request = urllib.request.Request(url, headers={"Cookie": cookie})
    # urlopen follows redirects: check the final URL so a login page is caught.
    with urllib.request.urlopen(request, timeout=30) as answer:
        if answer.status != 200 or answer.url != url:
            raise RuntimeError(f"{url} answered {answer.status} at {answer.url}")
        return answer.read().decode()


def wrk(url: str, cookie: str, *, duration: int, connections: int, threads: int) -> WrkResult:
    result = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{duration}s",
            "--timeout",
            "10s",
            "--latency",
            "-H",
            f"Cookie: {cookie}",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=duration + 60,
        check=True,
    )
    return parse_wrk(result.stdout)


def measure_web(
    workdir: Path,
    *,
    sessions: int,
    duration: int,
    connections: int = 20,
    threads: int = 2,
) -> list[tuple[str, WrkResult]]:
    """``wrk``'s figures per page (label, result) under ``connections`` clients."""
    from tests.servers.dovecot import free_port

    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (bash scripts/bench-deps.sh)")
    print(f"web: seeding {sessions} sessions ...", file=sys.stderr)
    user = seed(sessions)
    cookie = session_cookie(user)
    rows = []
    workdir.mkdir(parents=True, exist_ok=True)
    with gunicorn(free_port(), workdir / "gunicorn.log") as base:
        # Check each page once (and warm both workers' imports and template caches).
        listing = fetch(base + "/sessions/", cookie)
        shown = len(set(re.findall(r'href="/sessions/(\d+)/"', listing)))
        if shown != sessions:
            raise RuntimeError(f"the session list shows {shown} sessions, not {sessions}")
        for _ in range(4):
            for _what, path in PAGES:
                fetch(base + path, cookie)
        for what, path in PAGES:
            print(f"web: wrk {path} for {duration} s ...", file=sys.stderr)
            rows.append(
                (
                    what,
                    wrk(
                        base + path,
                        cookie,
                        duration=duration,
                        connections=connections,
                        threads=threads,
                    ),
                )
            )
    return rows
