"""The benchmark behind ``make bench``: our operations against the protocol and the peers.

Starts the test suite's Dovecot (and aiosmtpd, in a process of its own) on
loopback, seeds Maildirs with :func:`bench.generate.generate` (files written
directly, hard-linked for the copies, which is seconds for 10,000 messages),
then measures, for each mailbox size N and in the same run:

- our Read Mail over IMAPS into the database, in a worker-like child process
  (:mod:`bench.child`: fresh interpreter, fresh database; it also reports its
  peak RSS and then reads 10 newly appended messages incrementally);
- the naive reader: imapclient ``UID FETCH RFC822`` in batches of 300 and
  ``email.message_from_bytes(policy=default)``, bodies and attachments touched;
- the transport alone: the same fetches, no parsing;
- django-mailbox ``get_new_mail()`` into SQLite, in ``var/bench-venv``
  (:mod:`bench.peer_django_mailbox`; it deletes what it reads, so it reads a
  copy of the mailbox);
- our Read Mail over POP3S against a naive ``poplib`` RETR loop + the same parsing.

Then Send Mail (1,000 messages in one run) against smtplib alone and Django's
``send_mail()`` once per message, and a single 50 MB message read.

Then the web pages under gunicorn with 20 concurrent ``wrk`` clients and 500
saved sessions (:mod:`bench.web`; ``--no-web`` skips them), and the latency of
a connection test from enqueue to readable result with a warm worker on Redis
(:mod:`bench.latency`; ``--no-latency`` skips it).

Prints one table; ``--json`` writes the raw figures too.
"""

from __future__ import annotations

import argparse
import contextlib
import email
import email.policy
import json
import os
import poplib
import shutil
import smtplib
import ssl
import subprocess
import sys
import tempfile
import time
import venv
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

from imapclient import IMAPClient

from bench.generate import generate
from tests.servers.dovecot import MAIL_UID, DovecotServer, dovecot_binary

ROOT = Path(__file__).resolve().parent.parent
PEER_VENV = ROOT / "var" / "bench-venv"
PEER_PACKAGES = ("Django", "django-mailbox==4.10.1")
BATCH = 300
PASSWORD = "bench-pw"
SMTP_USER, SMTP_PASSWORD = "alice", "alice-secret-pw"  # tests.servers.smtp.USERS


@dataclass
class Row:
    what: str
    n: int | str
    seconds: float | None = None
    count: int | None = None
    note: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def rate(self) -> float | None:
        if self.seconds and self.count:
            return self.count / self.seconds
        return None


# --- servers and mailboxes --------------------------------------------------------


def unverified() -> ssl.SSLContext:
    # The servers' certificates are self-signed; every reader here trusts them alike.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def seed_maildir(server: DovecotServer, user: str, messages: Iterable[bytes]) -> list[Path]:
    """Write messages straight into ``user``'s Maildir ``cur/``; returns the files."""
    maildir = server.directory / "mail" / user / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    files = []
    base = 1_700_000_000
    for i, raw in enumerate(messages):
        # S= lets Dovecot know the size without a stat; ":2," = no flags.
        path = maildir / "cur" / f"{base + i}.M{i}P1.bench,S={len(raw)}:2,"
        path.write_bytes(raw)
        files.append(path)
    _chown_tree(server.directory / "mail" / user)
    server.add_user(user, PASSWORD)
    return files


def link_maildir(server: DovecotServer, user: str, files: list[Path]) -> None:
    """A second mailbox with the same messages (hard links: no copying)."""
    cur = server.directory / "mail" / user / "Maildir" / "cur"
    for sub in ("cur", "new", "tmp"):
        (cur.parent / sub).mkdir(parents=True, exist_ok=True)
    for path in files:
        os.link(path, cur / path.name)
    _chown_tree(server.directory / "mail" / user)
    server.add_user(user, PASSWORD)


def _chown_tree(top: Path) -> None:
    if os.geteuid() != 0:
        return
    for dirpath, _dirs, names in os.walk(top):
        os.chown(dirpath, MAIL_UID, MAIL_UID)
        for name in names:
            os.chown(os.path.join(dirpath, name), MAIL_UID, MAIL_UID)


def big_message(size: int) -> bytes:
    """One message of about ``size`` bytes: a short text and one big attachment."""
    payload = os.urandom(size * 3 // 4)
    msg = EmailMessage()
    msg["From"] = "Big Sender <big@example.com>"
    msg["To"] = "bench@example.test"
    msg["Subject"] = "A big attachment"
    msg["Date"] = "Mon, 01 Jan 2024 10:00:00 +0000"
    msg["Message-ID"] = "<big.1@example.com>"
    msg.set_content("See the attachment.\n")
    msg.add_attachment(payload, maintype="application", subtype="octet-stream", filename="big.bin")
    return msg.as_bytes(policy=email.policy.SMTP)


# --- the readers we compare with --------------------------------------------------


@contextlib.contextmanager
def imap_session(server: DovecotServer, user: str) -> Iterator[IMAPClient]:
    client = IMAPClient(
        "127.0.0.1", server.imaps_port, ssl=True, ssl_context=unverified(), timeout=60
    )
    try:
        client.login(user, PASSWORD)
        client.select_folder("INBOX", readonly=True)
        yield client
    finally:
        with contextlib.suppress(Exception):
            client.logout()


def touch(msg: email.message.EmailMessage) -> int:
    """Decode what Read Mail stores: headers, text and HTML bodies, attachments."""
    size = 0
    for name in ("from", "to", "cc", "subject", "date", "message-id"):
        size += len(str(msg.get(name, "")))
    for kind in ("plain", "html"):
        body = msg.get_body(preferencelist=(kind,))
        if body is not None:
            size += len(body.get_content())
    for attachment in msg.iter_attachments():
        size += len(attachment.get_content())
        attachment.get_filename()
    return size


def imap_fetch_all(server: DovecotServer, user: str, *, parse: bool) -> Row:
    started = time.perf_counter()
    count = 0
    with imap_session(server, user) as client:
        uids = client.search("ALL")
        for start in range(0, len(uids), BATCH):
            data = client.fetch(uids[start : start + BATCH], [b"RFC822"])
            for item in data.values():
                raw = item[b"RFC822"]
                if parse:
                    touch(email.message_from_bytes(raw, policy=email.policy.default))
                count += 1
    what = "naive reader (imapclient + email policy.default)" if parse else "IMAP transport alone"
    return Row(what, 0, time.perf_counter() - started, count)


def pop3_naive(server: DovecotServer, user: str) -> Row:
    started = time.perf_counter()
    pop = poplib.POP3_SSL("127.0.0.1", server.pop3s_port, context=unverified(), timeout=60)
    try:
        pop.user(user)
        pop.pass_(PASSWORD)
        count, _size = pop.stat()
        for number in range(1, count + 1):
            _resp, lines, _octets = pop.retr(number)
            raw = b"\r\n".join(lines) + b"\r\n"
            touch(email.message_from_bytes(raw, policy=email.policy.default))
    finally:
        pop.quit()
    return Row(
        "POP3 naive reader (poplib RETR + policy.default)", 0, time.perf_counter() - started, count
    )


# --- ours and the peer, each in a process of its own --------------------------------


def run_child(spec: dict, timeout: float = 1800) -> dict:
    result = subprocess.run(
        [sys.executable, "-m", "bench.child", json.dumps(spec)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if result.returncode != 0:
        raise RuntimeError(f"bench child failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def ensure_peer_venv() -> Path | None:
    """var/bench-venv with Django (as pinned) and django-mailbox; None if it cannot be made."""
    python = PEER_VENV / "bin" / "python"
    stamp = PEER_VENV / ".installed"
    if stamp.exists():
        return python
    try:
        venv.create(PEER_VENV, with_pip=True, clear=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "-c", str(ROOT / "requirements.lock")]
            + list(PEER_PACKAGES),
            check=True,
            timeout=600,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"note: no django-mailbox environment ({exc})", file=sys.stderr)
        return None
    stamp.touch()
    return python


def run_peer(python: Path, server: DovecotServer, user: str, workdir: Path) -> Row:
    uri = f"imap+ssl://{user}:{PASSWORD}@127.0.0.1:{server.imaps_port}"
    result = subprocess.run(
        [
            str(python),
            str(ROOT / "bench" / "peer_django_mailbox.py"),
            json.dumps({"workdir": str(workdir), "uri": uri}),
        ],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if result.returncode != 0:
        raise RuntimeError(f"django-mailbox run failed:\n{result.stderr[-3000:]}")
    out = json.loads(result.stdout.strip().splitlines()[-1])
    return Row("django-mailbox get_new_mail() into SQLite", 0, out["seconds"], out["stored"])


# --- sending ----------------------------------------------------------------------


def send_body() -> str:
    rng_text = next(generate(1, seed=7)).decode("ascii", "replace")
    return "\n".join(line for line in rng_text.splitlines()[-60:] if line)[:2000] + "\n"


def build_message(to: str, body: str) -> bytes:
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = "alice@example.test"
    msg["To"] = to
    msg["Subject"] = "Quarterly report"
    msg["Date"] = email.utils.formatdate()
    msg["Message-ID"] = email.utils.make_msgid(domain="example.test")
    msg.set_content(body)
    return msg.as_bytes()


def send_ours(port: int, recipients: list[str], body: str) -> Row:
    from django.contrib.auth import get_user_model

    from mailsessions import runs, sending
    from mailsessions.models import Mode, Operation, OperationKind
    from tests.factories import make_session

    owner, _ = get_user_model().objects.get_or_create(username="bench")
    session = make_session(
        owner,
        mode=Mode.SEND,
        name="bench outbox",
        out_host="127.0.0.1",
        out_port=port,
        out_encryption="ssl",
        out_verify_certificate=False,
        out_sender="alice@example.test",
        out_username=SMTP_USER,
    )
    session.set_out_password(SMTP_PASSWORD)
    session.save()
    operation = Operation.objects.create(
        session=session,
        name="bench send",
        kind=OperationKind.SEND,
        send_to=", ".join(recipients),
        send_subject="Quarterly report",
        send_text_body=body,
        send_individually=True,
    )
    run = runs.run_start(operation=operation)
    started = time.perf_counter()
    run = sending.operation_send(run=run)
    seconds = time.perf_counter() - started
    note = "" if run.status == "succeeded" else f"{run.status}: {run.error[:80]}"
    return Row(
        "Send Mail (ours, one run, one connection)", len(recipients), seconds, run.sent, note
    )


def send_transport(port: int, recipients: list[str], body: str) -> Row:
    messages = [(to, build_message(to, body)) for to in recipients]  # prebuilt, not timed
    started = time.perf_counter()
    with smtplib.SMTP_SSL("127.0.0.1", port, context=unverified(), timeout=60) as smtp:
        smtp.login(SMTP_USER, SMTP_PASSWORD)
        for to, raw in messages:
            smtp.sendmail("alice@example.test", [to], raw)
    return Row(
        "SMTP transport alone (smtplib, prebuilt)",
        len(recipients),
        time.perf_counter() - started,
        len(messages),
    )


def send_django_each(port: int, recipients: list[str], body: str) -> Row:
    from django.core.mail import send_mail
    from django.core.mail.backends.smtp import EmailBackend

    class Backend(EmailBackend):
        @property
        def ssl_context(self):  # the bench server's certificate is self-signed
            return unverified()

    started = time.perf_counter()
    for to in recipients:
        connection = Backend(
            host="127.0.0.1",
            port=port,
            username=SMTP_USER,
            password=SMTP_PASSWORD,
            use_ssl=True,
            timeout=60,
        )
        send_mail("Quarterly report", body, "alice@example.test", [to], connection=connection)
    return Row(
        "Django send_mail() per message",
        len(recipients),
        time.perf_counter() - started,
        len(recipients),
    )


@contextlib.contextmanager
def smtp_server(workdir: Path) -> Iterator[int]:
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.smtpd", str(workdir / "smtp-cert")],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"},
    )
    try:
        yield int(process.stdout.readline())
    finally:
        process.stdin.close()
        process.wait(timeout=30)


# --- the run ----------------------------------------------------------------------


def measure_reads(server, n: int, workdir: Path, args, peer_python) -> list[Row]:
    print(f"seeding {n} messages ...", file=sys.stderr)
    reader, peer = f"r{n}", f"p{n}"
    files = seed_maildir(server, reader, generate(n, seed=1))
    if peer_python is not None:
        link_maildir(server, peer, files)
    # Warm Dovecot's index and the page cache, so the first reader is not penalised.
    imap_fetch_all(server, reader, parse=False)
    if peer_python is not None:
        imap_fetch_all(server, peer, parse=False)

    rows: list[Row] = []
    print(f"N={n}: transport, naive ...", file=sys.stderr)
    transport = imap_fetch_all(server, reader, parse=False)
    naive = imap_fetch_all(server, reader, parse=True)
    rows += [transport, naive]

    pop_naive = pop_ours = None
    if not args.no_pop3:
        print(f"N={n}: POP3 ...", file=sys.stderr)
        pop_naive = pop3_naive(server, reader)
        out = run_child(_spec(server, "pop3", reader, workdir / f"pop3-{n}", args))
        pop_ours = Row(
            "POP3 Read Mail (ours, into the database)",
            n,
            out["seconds"],
            out["stored"],
            _status(out),
        )

    print(f"N={n}: Read Mail ...", file=sys.stderr)
    spec = _spec(server, "imap", reader, workdir / f"imap-{n}", args)
    spec["incremental"] = 10
    if args.profile:
        spec["profile"] = str(Path(args.profile).with_suffix(f".{n}.txt"))
    out = run_child(spec)
    ours = Row(
        "Read Mail IMAPS (ours, into the database)", n, out["seconds"], out["stored"], _status(out)
    )
    ours.extra = {"maxrss": out["maxrss"], "rss_before": out["rss_before"]}
    rows.insert(0, ours)
    inc = out["incremental"]
    rows.append(
        Row(
            "incremental: 10 new in a mailbox read before",
            n,
            inc["seconds"],
            inc["stored"],
            f"fetched {inc['read']}, stored {inc['stored']}",
        )
    )
    rows.append(
        Row(
            "peak RSS of the reading worker",
            n,
            note=f"{out['maxrss'] / 2**20:.0f} MiB (after setup {out['rss_before'] / 2**20:.0f} MiB)",
            extra={"maxrss": out["maxrss"]},
        )
    )

    peer_row = Row("django-mailbox get_new_mail() into SQLite", n, note="not run")
    if peer_python is not None and n <= args.peer_max:
        print(f"N={n}: django-mailbox ...", file=sys.stderr)
        peer_row = run_peer(peer_python, server, peer, workdir / f"peer-{n}")
    elif peer_python is not None:
        peer_row.note = f"skipped (N > --peer-max {args.peer_max})"
    rows.insert(4, peer_row)
    if pop_ours is not None:
        rows += [pop_ours, pop_naive]

    for row in rows:
        row.n = n
    # Ratios taken in this run.
    ours.note = _ratios(ours, {"naive": naive, "transport": transport, "django-mailbox": peer_row})
    if pop_ours is not None:
        pop_ours.note = (pop_ours.note + " " + _ratios(pop_ours, {"POP3 naive": pop_naive})).strip()
    return rows


def _spec(server, protocol: str, user: str, workdir: Path, args) -> dict:
    return {
        "workdir": str(workdir),
        "database_url": args.database_url,
        "protocol": protocol,
        "port": server.port_for(protocol, "ssl"),
        "imap_port": server.imap_port,
        "user": user,
        "password": PASSWORD,
    }


def _status(out: dict) -> str:
    return "" if out["status"] == "succeeded" else f"{out['status']}: {out['error'][:80]}"


def _ratios(row: Row, others: dict[str, Row]) -> str:
    parts = []
    for name, other in others.items():
        if row.rate and other.rate:
            parts.append(f"{row.rate / other.rate:.2f}x {name}")
    return (row.note + " " + ", ".join(parts)).strip()


def measure_big(server, workdir: Path, args) -> Row:
    size = args.big_mb * 2**20
    user = "big"
    seed_maildir(server, user, [big_message(size)])
    out = run_child(_spec(server, "imap", user, workdir / "big", args))
    raw = size * 4 // 3  # approx: base64 grows the payload by a third
    grown = out["maxrss"] - out["rss_before"]
    return Row(
        f"one {args.big_mb} MB message, Read Mail IMAPS",
        1,
        out["seconds"],
        out["stored"],
        f"peak RSS +{grown / 2**20:.0f} MiB = {grown / raw:.1f}x the raw message {_status(out)}".strip(),
    )


def measure_send(workdir: Path, count: int) -> list[Row]:
    recipients = [f"user{i}@example.test" for i in range(count)]
    body = send_body()
    with smtp_server(workdir) as port:
        print(f"send {count}: ours, transport, send_mail ...", file=sys.stderr)
        ours = send_ours(port, recipients, body)
        transport = send_transport(port, recipients, body)
        each = send_django_each(port, recipients, body)
    ours.note = _ratios(ours, {"transport": transport, "send_mail each": each})
    return [ours, transport, each]


def _guarded(what: str, measure) -> list[Row]:
    try:
        return measure()
    except Exception as exc:
        print(f"{what} failed: {exc!r}", file=sys.stderr)
        return [Row(what, "–", note=f"failed: {type(exc).__name__}: {str(exc)[:120]}")]


def measure_web_rows(workdir: Path, args) -> list[Row]:
    from bench.web import measure_web

    rows = []
    for what, out in measure_web(
        workdir / "web", sessions=args.web_sessions, duration=args.web_seconds
    ):
        note = (
            f"requests, requests/s; p50 {out.p50_ms:.1f} ms, p90 {out.p90_ms:.1f} ms, "
            f"p99 {out.p99_ms:.1f} ms; 20 connections"
        )
        if out.errors:
            note += f"; {out.errors}"
        rows.append(Row(what, args.web_sessions, out.seconds, out.requests, note))
    return rows


def measure_latency_rows(server, args) -> list[Row]:
    from bench.latency import measure_latency

    out = measure_latency(server, samples=args.latency_samples)
    note = (
        f"p50 {out.percentile(50):.0f} ms, p90 {out.percentile(90):.0f} ms, "
        f"max {max(out.samples_ms):.0f} ms; in the worker p50 "
        f"{out.percentile(50, out.in_worker_ms):.0f} ms"
    )
    if out.failed:
        note += f"; {len(out.failed)} not passed: {out.failed[0]}"
    return [
        Row(
            "task latency: Test connection enqueued -> result readable",
            len(out.samples_ms),
            note=note,
            extra={"samples_ms": out.samples_ms},
        )
    ]


def format_table(rows: list[Row]) -> str:
    lines = [
        "| measurement | N | messages | seconds | messages/s | notes |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        seconds = f"{row.seconds:.2f}" if row.seconds is not None else "–"
        rate = f"{row.rate:,.0f}" if row.rate else "–"
        count = str(row.count) if row.count is not None else "–"
        lines.append(f"| {row.what} | {row.n} | {count} | {seconds} | {rate} | {row.note} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,10000", help="mailbox sizes, comma-separated")
    parser.add_argument("--send", type=int, default=1000, help="messages in the Send Mail run")
    parser.add_argument("--big-mb", type=int, default=50, help="size of the single big message")
    parser.add_argument(
        "--peer-max", type=int, default=10_000, help="largest N django-mailbox reads"
    )
    parser.add_argument("--no-peer", action="store_true", help="skip django-mailbox")
    parser.add_argument("--no-pop3", action="store_true", help="skip the POP3 rows")
    parser.add_argument("--no-web", action="store_true", help="skip the web (wrk) rows")
    parser.add_argument("--web-sessions", type=int, default=500, help="saved sessions listed")
    parser.add_argument("--web-seconds", type=int, default=10, help="wrk duration per page")
    parser.add_argument("--no-latency", action="store_true", help="skip the task-latency row")
    parser.add_argument("--latency-samples", type=int, default=30, help="connection tests timed")
    parser.add_argument("--database-url", default="", help="default: a throwaway SQLite file")
    parser.add_argument("--profile", default="", help="write pyinstrument reports to PATH.N.txt")
    parser.add_argument("--json", default="", help="also write the rows as JSON to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    binary = dovecot_binary()
    if binary is None:
        print("dovecot is not installed (make system-deps)", file=sys.stderr)
        return 2
    peer_python = None if args.no_peer else ensure_peer_venv()
    workdir = Path(tempfile.mkdtemp(prefix="mailsessions-bench-"))
    from bench.child import setup_django

    setup_django(workdir / "main", args.database_url)
    server = DovecotServer(binary)
    rows: list[Row] = []
    try:
        server.start()
        # One failing part must not cost the figures of the others.
        for n in sizes:
            rows += _guarded(
                f"reads, N={n}", lambda n=n: measure_reads(server, n, workdir, args, peer_python)
            )
        if args.send:
            rows += _guarded("send", lambda: measure_send(workdir, args.send))
        if args.big_mb:
            rows += _guarded("big message", lambda: [measure_big(server, workdir, args)])
        if not args.no_web:
            rows += _guarded("web", lambda: measure_web_rows(workdir, args))
        if not args.no_latency and args.latency_samples:
            rows += _guarded("latency", lambda: measure_latency_rows(server, args))
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    if len(sizes) > 1:
        rss = [r.extra["maxrss"] for r in rows if r.what.startswith("peak RSS")] or [1]
        rows.append(
            Row(
                "peak RSS, largest N / smallest N",
                f"{sizes[-1]}/{sizes[0]}",
                note=f"{rss[-1] / rss[0]:.2f}x",
            )
        )
    print(format_table(rows))
    if args.json:
        Path(args.json).write_text(
            json.dumps([{**r.__dict__, "rate": r.rate} for r in rows], indent=2, default=str)
        )
    return 0
