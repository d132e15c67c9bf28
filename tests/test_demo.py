"""The demo mailbox: a real Dovecot and SMTP server on loopback, seeded once.

One demo server per module (its own directory and free ports). carol is the
superuser the demo session is made for. Assertions read the mailbox with
imapclient directly, not through the demo's own helpers.
"""

from __future__ import annotations

import email
import email.policy
import os
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection
from imapclient import IMAPClient
from imapclient.exceptions import LoginError

from mailsessions.demo import (
    DEMO_SESSION_NAME,
    DemoMailServer,
    DemoPorts,
    ensure_demo_session,
    pymap_binary,
)
from mailsessions.diagnostics import diagnose_incoming, diagnose_outgoing
from mailsessions.models import MailSession
from mailsessions.policy import TargetPolicy

pytestmark = pytest.mark.slow  # a Dovecot start/stop cycle and a subprocess: ~5-8 s in all

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parent.parent


def free_ports() -> DemoPorts:
    sockets = [socket.socket() for _ in range(5)]
    try:
        for s in sockets:
            s.bind((HOST, 0))
        return DemoPorts(*(s.getsockname()[1] for s in sockets))
    finally:
        for s in sockets:
            s.close()


def demo_directory() -> Path:
    # Not pytest's tmp dir (0700 root): Dovecot's mail uid must reach the Maildir.
    directory = Path(tempfile.mkdtemp(prefix="demo-test-"))
    directory.chmod(0o755)
    return directory


def imap_login(server: DemoMailServer, password: str | None = None) -> IMAPClient:
    client = IMAPClient(HOST, server.ports.imap, ssl=False, timeout=5)
    client.login(
        "demo", password if password is not None else server.password_path.read_text().strip()
    )
    return client


def inbox_messages(
    server: DemoMailServer, folder: str = "INBOX"
) -> list[email.message.EmailMessage]:
    client = imap_login(server)
    try:
        client.select_folder(folder, readonly=True)
        data = client.fetch(client.search("ALL"), [b"BODY.PEEK[]"])
    finally:
        client.logout()
    return [
        email.message_from_bytes(data[uid][b"BODY[]"], policy=email.policy.default)
        for uid in sorted(data)
    ]


def processes_using(directory: Path) -> list[int]:
    """PIDs whose command line, working directory or open files lie in ``directory``."""
    needle = str(directory)
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            targets = [
                (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            ]
            targets.append(os.readlink(proc / "cwd"))
            targets.extend(os.readlink(fd) for fd in (proc / "fd").iterdir())
        except OSError:
            continue
        if any(needle in target for target in targets):
            found.append(int(proc.name))
    return found


def greeting(port: int, *, tls: bool = False) -> bytes:
    """The first line a server sends (after the TLS handshake if ``tls``)."""
    with socket.create_connection((HOST, port), timeout=5) as raw:
        if not tls:
            return raw.recv(256)
        with ssl._create_unverified_context().wrap_socket(raw) as wrapped:
            return wrapped.recv(256)


def port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def demo() -> Iterator[DemoMailServer]:
    directory = demo_directory()
    server = DemoMailServer(directory, free_ports(), imap_server="dovecot")
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def test_first_start_seeds_a_varied_inbox(demo: DemoMailServer):
    messages = inbox_messages(demo)

    seeded = [m for m in messages if str(m["Message-ID"] or "").endswith("@demo.localhost>")]
    assert demo.seeded == len(seeded) >= 30
    assert len({m["From"] for m in messages}) >= 8
    assert any(m.get_body(("html",)) is not None for m in messages)
    assert any(list(m.iter_attachments()) for m in messages)
    assert any(not str(m["Subject"]).isascii() for m in messages)
    assert inbox_messages(demo, "Archive"), "a second folder to browse"


def test_password_is_random_and_private(demo: DemoMailServer):
    password = demo.password_path.read_text().strip()

    assert len(password) >= 20
    assert demo.password_path.stat().st_mode & 0o777 == 0o600
    assert password not in (demo.directory / "dovecot.conf").read_text()
    with pytest.raises(LoginError):
        imap_login(demo, password="not-the-password")


def test_smtp_requires_starttls_and_the_demo_password(demo: DemoMailServer):
    with smtplib.SMTP(HOST, demo.ports.smtp, timeout=5) as client:
        client.ehlo()
        assert not client.has_extn("auth"), "no AUTH before STARTTLS"
        assert client.mail("someone@example.com")[0] == 530
        client.rset()
        client.starttls(context=ssl._create_unverified_context())
        client.ehlo()
        assert {"PLAIN", "LOGIN"} <= set(client.esmtp_features["auth"].split())
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            client.login("demo", "not-the-password")
        assert refused.value.smtp_code == 535


@pytest.mark.django_db
def test_demo_session_passes_its_connection_test_and_test_mail_arrives(demo, carol):
    session = ensure_demo_session(carol, server=demo)

    assert (session.name, session.in_host, session.in_port) == (
        DEMO_SESSION_NAME,
        HOST,
        demo.ports.imap,
    )
    assert (session.in_encryption, session.out_encryption) == ("starttls", "starttls")
    assert session.verification_off
    assert session.test_mail_to == "demo@localhost"
    incoming = diagnose_incoming(
        session.in_protocol, session.incoming_config(), policy=TargetPolicy()
    )
    assert incoming.passed, incoming.summary

    token = uuid.uuid4().hex
    message = (
        f"From: demo@localhost\r\nTo: demo@localhost\r\nSubject: demo test {token}\r\n\r\nHello.\r\n"
    ).encode()
    outgoing = diagnose_outgoing(
        session.outgoing_config(),
        send_to=session.test_mail_to,
        sender=session.sender_address(),
        message=message,
        policy=TargetPolicy(),
    )
    assert outgoing.passed, outgoing.summary
    assert any(f"demo test {token}" == m["Subject"] for m in inbox_messages(demo))

    # Run again (every start of the demo does): the same session, updated.
    again = ensure_demo_session(carol, server=demo)
    assert again.pk == session.pk
    assert MailSession.objects.filter(owner=carol).count() == 1


def test_restart_reuses_the_mailbox_and_stop_leaves_no_dovecot(demo: DemoMailServer):
    count = len(inbox_messages(demo))
    master = demo.process.pid
    assert master in processes_using(demo.directory), "the check below can see Dovecot"

    demo.stop()

    assert not Path(f"/proc/{master}").exists()
    assert processes_using(demo.directory) == []
    assert not any(port_open(p) for p in (demo.ports.imap, demo.ports.pop3, demo.ports.smtp))

    demo.start()
    assert demo.seeded == 0
    assert len(inbox_messages(demo)) == count


def test_command_exits_at_once_when_disabled(settings, capsys):
    settings.MAILSESSIONS_DEMO = False

    call_command("demomailbox")

    assert "disabled" in capsys.readouterr().out


def _database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or 'localhost'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.mark.django_db(transaction=True)
def test_command_serves_until_sigterm_and_gives_the_superuser_a_session(carol):
    var_dir = demo_directory()
    ports = free_ports()
    env = {
        **os.environ,
        "MAILSESSIONS_VAR_DIR": str(var_dir),
        "MAILSESSIONS_DEMO": "True",
        "PYTHONUNBUFFERED": "1",
        "DATABASE_URL": _database_url(),  # the test database, where carol is
        "MAILSESSIONS_DEMO_IMAP_PORT": str(ports.imap),
        "MAILSESSIONS_DEMO_IMAPS_PORT": str(ports.imaps),
        "MAILSESSIONS_DEMO_POP3_PORT": str(ports.pop3),
        "MAILSESSIONS_DEMO_POP3S_PORT": str(ports.pop3s),
        "MAILSESSIONS_DEMO_SMTP_PORT": str(ports.smtp),
    }
    process = subprocess.Popen(
        [sys.executable, "manage.py", "demomailbox"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            output.append(line)
            if line.startswith("Demo mailbox running"):
                break
        assert "Demo mailbox running (dovecot)" in "".join(output), "".join(output)
        assert greeting(ports.imap).startswith(b"* OK")
        assert greeting(ports.pop3s, tls=True).startswith(b"+OK")
        assert greeting(ports.smtp).startswith(b"220")
        session = MailSession.objects.get(owner=carol, name=DEMO_SESSION_NAME)
        assert session.in_port == ports.imap and session.out_port == ports.smtp

        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=15)
        assert process.returncode == 0, rest
        assert "Demo mailbox stopped." in rest
        assert processes_using(var_dir / "demo") == []
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        shutil.rmtree(var_dir, ignore_errors=True)


def _send(server: DemoMailServer, subject: str) -> tuple[int, bytes]:
    with smtplib.SMTP(HOST, server.ports.smtp, timeout=5) as client:
        client.starttls(context=ssl._create_unverified_context())
        client.login("demo", server.password_path.read_text().strip())
        client.mail("someone@example.com")
        client.rcpt("demo@localhost")
        return client.data(f"Subject: {subject}\r\n\r\nHello.\r\n".encode())


@pytest.mark.skipif(pymap_binary() is None, reason="pymap (optional fallback) is not installed")
def test_pymap_fallback_serves_a_seeded_inbox_and_takes_mail():
    directory = demo_directory()
    server = DemoMailServer(directory, free_ports(), imap_server="pymap")
    try:
        server.start()
        assert server.seeded >= 30 and not server.has_pop3
        assert _send(server, "via pymap")[0] == 250
        assert any(m["Subject"] == "via pymap" for m in inbox_messages(server))
        pid = server.process.pid
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)
    assert not Path(f"/proc/{pid}").exists()


def test_without_an_imap_server_only_smtp_runs(caplog):
    directory = demo_directory()
    server = DemoMailServer(directory, free_ports(), imap_server="")
    try:
        server.start()
        assert "only the demo SMTP server runs" in caplog.text
        assert not port_open(server.ports.imap)
        code, reply = _send(server, "nowhere to go")
        assert code == 250 and b"discarded" in reply
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)
