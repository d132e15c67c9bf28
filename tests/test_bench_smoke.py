"""The benchmark (``make bench``) end to end with small N, so it cannot rot.

Runs ``python -m bench`` as a subprocess (its own Django setup and throwaway
database, real Dovecot and aiosmtpd on loopback) and checks only that the
table has every row. Never an absolute time, never a ratio: CI machines vary.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers.dovecot import dovecot_binary
from tests.servers.worker import redis_available

ROOT = Path(__file__).resolve().parent.parent
ROWS_PER_N = (
    "Read Mail IMAPS (ours, into the database)",
    "IMAP transport alone",
    "naive reader (imapclient + email policy.default)",
    "django-mailbox get_new_mail() into SQLite",
    "incremental: 10 new in a mailbox read before",
    "peak RSS of the reading worker",
    "POP3 Read Mail (ours, into the database)",
    "POP3 naive reader (poplib RETR + policy.default)",
)
ROWS_ONCE = (
    "Send Mail (ours, one run, one connection)",
    "SMTP transport alone (smtplib, prebuilt)",
    "Django send_mail() per message",
    "one 2 MB message, Read Mail IMAPS",
    "peak RSS, largest N / smallest N",
)
WEB_ROWS = (
    "web: session list (GET /sessions/)",
    "web: wizard first page (GET /sessions/new/)",
    "web: floor, no session (GET /healthz)",
)
LATENCY_ROW = "task latency: Test connection enqueued -> result readable"


@pytest.mark.skipif(dovecot_binary() is None, reason="dovecot is not installed")
@pytest.mark.timeout(120)
def test_bench_prints_every_row():
    # The web rows need wrk (scripts/bench-deps.sh, make bench) and the latency row Redis.
    web, latency = shutil.which("wrk") is not None, redis_available()
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--sizes", "20,40", "--send", "20", "--big-mb", "2"]
        + (["--web-sessions", "20", "--web-seconds", "2"] if web else ["--no-web"])
        + (["--latency-samples", "3"] if latency else ["--no-latency"]),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    table = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    labels = [line.split("|")[1].strip() for line in table[1:]]
    for n in (20, 40):
        for row in ROWS_PER_N:
            cells = [
                line
                for line in table
                if line.split("|")[1].strip() == row and line.split("|")[2].strip() == str(n)
            ]
            assert len(cells) == 1, f"no row {row!r} for N={n} in:\n{result.stdout}"
    for row in ROWS_ONCE + (WEB_ROWS if web else ()) + ((LATENCY_ROW,) if latency else ()):
        assert row in labels, f"no row {row!r} in:\n{result.stdout}"
    for line in table:
        if line.startswith(("| web:", "| task latency")):
            assert "p50" in line and "failed" not in line, line
            assert "not passed" not in line and "Non-2xx" not in line, line
    # Every message of each mailbox was stored by our reader, and only the new ones re-read.
    ours = [line for line in table if "Read Mail IMAPS (ours" in line]
    assert [line.split("|")[3].strip() for line in ours] == ["20", "40"]
    incremental = [line for line in table if line.startswith("| incremental")]
    assert all("fetched 10, stored 10" in line for line in incremental)
