"""A real Dovecot (IMAP + POP3, implicit TLS and STARTTLS) on loopback.

One server per test session, on free random ports, from a config written into
a temporary directory (the settings are the ones known to work on these
machines; the config comments say why where it is not obvious). Personas:

- alice ("alice-secret-pw"): the mailbox most tests read and change; the
  ``alice_mailbox`` fixture empties it before each test.
- bob ("bob-secret-pw"): a second, independent mailbox (tests that must not
  see alice's mail, or that need two users at once).

The helpers (``append``, ``folder_messages``, ...) talk IMAP with imapclient
directly, never through the code under test, so assertions read the server's
real state.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError

from mailsessions.backends.base import Security, ServerConfig
from mailsessions.demo import dovecot_config
from tests.servers.certs import make_self_signed

HOST = "127.0.0.1"
PERSONAS = {"alice": "alice-secret-pw", "bob": "bob-secret-pw"}
# Dovecot runs mail processes as this uid/gid (nobody/nogroup) when we are root.
MAIL_UID = 65534


def dovecot_binary() -> str | None:
    return shutil.which("dovecot") or (
        "/usr/sbin/dovecot" if os.access("/usr/sbin/dovecot", os.X_OK) else None
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class StoredMessage:
    """A message as the server holds it, read back for assertions."""

    uid: int
    flags: frozenset[str]  # IMAP spelling: "\\Seen", "\\Flagged", ...
    raw: bytes


class DovecotServer:
    """A Dovecot process and helpers to arrange and inspect its mailboxes."""

    host = HOST

    def __init__(self, binary: str = "dovecot") -> None:
        self.binary = binary
        # Not pytest's tmp dir: that one is 0700 root, and the mail processes
        # (uid 65534) must be able to reach their Maildir below it.
        self.directory = Path(tempfile.mkdtemp(prefix="dovecot-"))
        self.directory.chmod(0o755)
        self.imap_port = free_port()
        self.imaps_port = free_port()
        self.pop3_port = free_port()
        self.pop3s_port = free_port()
        pair = make_self_signed(self.directory / "tls")
        self.cert_path: Path = pair.cert
        self.key_path: Path = pair.key
        self.config_path = self.directory / "dovecot.conf"
        self.log_path = self.directory / "dovecot.log"
        self.users_path = self.directory / "users"
        self.passwords: dict[str, str] = {}
        self.process: subprocess.Popen | None = None

    # --- lifecycle ------------------------------------------------------

    def start(self, timeout: float = 15.0) -> None:
        d = self.directory
        mail = d / "mail"
        mail.mkdir()
        os.chown(mail, MAIL_UID, MAIL_UID)
        self.users_path.write_text("")
        for name, password in PERSONAS.items():
            self.add_user(name, password)
        self.config_path.write_text(
            dovecot_config(
                directory=d,
                host=HOST,
                cert=self.cert_path,
                key=self.key_path,
                uid=MAIL_UID,
                gid=MAIL_UID,
                imap_port=self.imap_port,
                imaps_port=self.imaps_port,
                pop3_port=self.pop3_port,
                pop3s_port=self.pop3s_port,
                instance="dovecot-test",
                special_folders=(),
            )
        )
        self.process = subprocess.Popen(
            [self.binary, "-F", "-c", str(self.config_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        # Ready once the IMAP port greets; an earlier connection may be dropped.
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"dovecot exited at start: {self._diagnostics()}")
            try:
                with socket.create_connection((HOST, self.imap_port), timeout=1) as s:
                    if s.recv(64).startswith(b"* OK"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"dovecot did not greet within {timeout} s")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        if self.process is not None and self.process.stderr:
            self.process.stderr.close()
        self.process = None
        shutil.rmtree(self.directory, ignore_errors=True)

    def _diagnostics(self) -> str:
        stderr = ""
        if self.process is not None and self.process.stderr:
            with contextlib.suppress(Exception):
                stderr = self.process.stderr.read().decode(errors="replace")
        log = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return (stderr + log)[-2000:]

    def log_tail(self, chars: int = 2000) -> str:
        """The end of Dovecot's log, for debugging a failing test."""
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    # --- users and connection settings ----------------------------------

    def add_user(self, name: str, password: str) -> None:
        """Add (or replace) a user; Dovecot re-reads the users file by itself."""
        if any(c in name + password for c in ":\n"):
            raise ValueError("user names and passwords here may not contain ':' or newlines")
        self.passwords[name] = password
        lines = [f"{user}:{{PLAIN}}{pw}" for user, pw in self.passwords.items()]
        tmp = self.users_path.with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        tmp.replace(self.users_path)
        if self.process is not None:
            self._wait_for_login(name, password)

    def add_users(self, users: dict[str, str]) -> None:
        """Add many users with one write of the users file (``add_user`` waits
        up to a second for each; this waits once, for the last one)."""
        for name, password in users.items():
            if any(c in name + password for c in ":\n"):
                raise ValueError("user names and passwords here may not contain ':' or newlines")
        self.passwords.update(users)
        lines = [f"{user}:{{PLAIN}}{pw}" for user, pw in self.passwords.items()]
        tmp = self.users_path.with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        tmp.replace(self.users_path)
        if self.process is not None and users:
            self._wait_for_login(*list(users.items())[-1])

    def _wait_for_login(self, name: str, password: str, timeout: float = 3.0) -> None:
        # Dovecot stats the users file at most once a second, so a user added
        # just after another login may take up to a second to be known.
        deadline = time.monotonic() + timeout
        while True:
            client = IMAPClient(HOST, self.imap_port, ssl=False, timeout=5)
            try:
                _login(client, name, password)
                return
            except IMAPClientError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
            finally:
                with contextlib.suppress(Exception):
                    client.logout()

    def port_for(self, protocol: str, security: Security | str) -> int:
        implicit = Security(security) == Security.SSL
        if protocol == "imap":
            return self.imaps_port if implicit else self.imap_port
        if protocol == "pop3":
            return self.pop3s_port if implicit else self.pop3_port
        raise ValueError(f"Dovecot here serves imap and pop3, not {protocol!r}")

    def config_for(
        self, user: str, protocol: str = "imap", security: Security | str = Security.SSL, **kw
    ) -> ServerConfig:
        """A ServerConfig for ``user`` on the right port for protocol and security.

        Defaults: verification off (the certificate is self-signed) and a 5 s
        timeout; any ServerConfig field can be overridden through ``kw``.
        """
        values = {
            "host": HOST,
            "port": self.port_for(protocol, security),
            "security": Security(security),
            "username": user,
            "password": self.passwords.get(user, ""),
            "verify_certificate": False,
            "timeout": 5.0,
        }
        values.update(kw)
        return ServerConfig(**values)

    # --- mailbox helpers (direct IMAP, not the code under test) ----------

    @contextlib.contextmanager
    def imap(self, user: str) -> Iterator[IMAPClient]:
        """A logged-in imapclient session as ``user`` (plain loopback port)."""
        client = IMAPClient(HOST, self.imap_port, ssl=False, timeout=10)
        try:
            _login(client, user, self.passwords[user])
            yield client
        finally:
            with contextlib.suppress(Exception):
                client.logout()

    def append(
        self,
        user: str,
        folder: str,
        raw: bytes,
        flags: Iterable[str] = (),
        internal_date: dt.datetime | None = None,
    ) -> int:
        """Store one message; returns its UID. Creates the folder if missing.

        ``flags`` use IMAP spelling ("\\Seen"); ``internal_date`` is the
        arrival date IMAP SINCE/BEFORE compare (default: now).
        """
        return self.append_many(user, folder, [(raw, flags, internal_date)])[0]

    def append_many(self, user: str, folder: str, messages: Iterable) -> list[int]:
        """Store several messages in one session; returns their UIDs in order.

        Each item is raw bytes, ``(raw, flags)`` or ``(raw, flags, internal_date)``.
        """
        uids = []
        with self.imap(user) as client:
            if not client.folder_exists(folder):
                client.create_folder(folder)
            for item in messages:
                raw, flags, when = (
                    (item, (), None) if isinstance(item, bytes) else (*item, None)[:3]
                )
                response = client.append(folder, raw, flags=tuple(flags), msg_time=when)
                uids.append(_appenduid(response))
        return uids

    def folders(self, user: str) -> list[str]:
        with self.imap(user) as client:
            return sorted(name for _flags, _sep, name in client.list_folders())

    def folder_messages(self, user: str, folder: str) -> list[StoredMessage]:
        """Every message in ``folder`` by UID, read without changing any flag.

        Raises LookupError when the folder does not exist.
        """
        with self.imap(user) as client:
            if not client.folder_exists(folder):
                raise LookupError(f"{user} has no folder {folder!r}")
            client.select_folder(folder, readonly=True)
            uids = client.search("ALL")
            if not uids:
                return []
            data = client.fetch(uids, [b"BODY.PEEK[]", b"FLAGS"])
        return [
            StoredMessage(
                uid=uid,
                # \Recent depends on which session looked first: noise here.
                flags=frozenset(f.decode() for f in data[uid][b"FLAGS"]) - {"\\Recent"},
                raw=data[uid][b"BODY[]"],
            )
            for uid in sorted(data)
        ]

    def reset_mailbox(self, user: str) -> None:
        """Empty INBOX and Sent and delete every other folder."""
        with self.imap(user) as client:
            names = [name for _flags, _sep, name in client.list_folders()]
            # Children before parents, so every DELETE succeeds.
            for name in sorted(names, key=len, reverse=True):
                if name.upper() in ("INBOX", "SENT"):
                    client.select_folder(name)
                    uids = client.search("ALL")
                    if uids:
                        client.delete_messages(uids, silent=True)
                        client.expunge()
                    client.close_folder()
                else:
                    try:
                        client.delete_folder(name)
                    except IMAPClientError as exc:
                        # A parent that only existed because of its children
                        # (\Noselect) vanishes with them.
                        if "NONEXISTENT" not in str(exc):
                            raise

    def kick(self, user: str, timeout: float = 5.0) -> None:
        """Disconnect every IMAP/POP3 session of ``user`` (server side).

        Simulates a server that drops the connection mid-session. Returns
        once Dovecot no longer lists a session for ``user``, so whatever the
        client sends next cannot reach a live session.
        """
        self._doveadm("kick", user)
        deadline = time.monotonic() + timeout
        while self.sessions(user):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{user}'s sessions survived doveadm kick")
            time.sleep(0.02)

    def sessions(self, user: str) -> list[str]:
        """The protocols of ``user``'s open sessions (``doveadm who``)."""
        out = self._doveadm("who", "-1", user)
        return [line.split()[1] for line in out.splitlines()[1:] if line.split()[:1] == [user]]

    def _doveadm(self, *args: str) -> str:
        result = subprocess.run(
            ["doveadm", "-c", str(self.config_path), *args],
            check=True,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return result.stdout


@contextlib.contextmanager
def silent_listener() -> Iterator[int]:
    """A loopback port that accepts TCP connections but never says a word.

    The kernel completes the handshake from the listen backlog, so clients
    connect and then wait for a greeting (or TLS handshake) that never comes.
    """
    with socket.socket() as s:
        s.bind((HOST, 0))
        s.listen(16)
        yield s.getsockname()[1]


def make_message(
    subject: str = "Hello",
    *,
    sender: str = "Carol <carol@example.org>",
    to: str = "alice@example.org",
    body: str = "Hello there.\n",
    date: dt.datetime | None = None,
) -> bytes:
    """A small RFC 5322 message with CRLF line ends, as a server stores it."""
    from email.message import EmailMessage
    from email.policy import SMTP
    from email.utils import format_datetime, make_msgid

    message = EmailMessage(policy=SMTP)
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = format_datetime(date or dt.datetime(2024, 1, 1, 12, tzinfo=dt.UTC))
    message["Message-ID"] = make_msgid(domain="example.org")
    message.set_content(body)
    return message.as_bytes()


def _login(client: IMAPClient, user: str, password: str) -> None:
    # IMAP LOGIN is ASCII-only; SASL PLAIN carries UTF-8.
    if (user + password).isascii():
        client.login(user, password)
    else:
        client.plain_login(user, password)


def _appenduid(response: bytes) -> int:
    # "[APPENDUID <uidvalidity> <uid>] Append completed."
    text = response.decode() if isinstance(response, bytes) else str(response)
    return int(text.split("APPENDUID", 1)[1].split("]", 1)[0].split()[1])


@pytest.fixture(scope="session")
def dovecot() -> Iterator[DovecotServer]:
    """One Dovecot for the whole test session (alice and bob exist)."""
    binary = dovecot_binary()
    if binary is None:
        pytest.skip(
            "the dovecot binary is not installed (apt-get install dovecot-imapd dovecot-pop3d)"
        )
    server = DovecotServer(binary)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def alice_mailbox(dovecot: DovecotServer) -> DovecotServer:
    """The Dovecot server with alice's mailbox emptied for this test."""
    dovecot.reset_mailbox("alice")
    return dovecot
