"""A demo mailbox on loopback, so a newcomer's first page has something that works.

``DemoMailServer`` keeps everything under ``settings.VAR_DIR / "demo"``: a
Dovecot config (IMAP with STARTTLS and implicit TLS, POP3 likewise), a
self-signed certificate, the user "demo" with a random password (stored in
``password``, mode 0600) and its Maildir. It runs ``dovecot -F`` as a child
process, plus an aiosmtpd server (STARTTLS, AUTH as demo) that delivers every
accepted message into demo's INBOX by IMAP APPEND. On first start the INBOX is
seeded with a few dozen varied messages; later starts reuse the mailbox.

Without Dovecot, pymap (pure Python, if installed) serves IMAP with STARTTLS
on the same port (no implicit TLS, no POP3, mail kept in memory only); without
either only SMTP runs and a clear message is logged.

Ports (all on 127.0.0.1) come from the environment, each overridable per
instance: MAILSESSIONS_DEMO_IMAP_PORT (10143, STARTTLS),
MAILSESSIONS_DEMO_IMAPS_PORT (10993), MAILSESSIONS_DEMO_POP3_PORT (10110),
MAILSESSIONS_DEMO_POP3S_PORT (10995), MAILSESSIONS_DEMO_SMTP_PORT (10587).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import grp
import hashlib
import hmac
import ipaddress
import logging
import os
import pwd
import random
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from django.conf import settings
from imapclient import IMAPClient

from mailsessions.env import envint

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
DEMO_USER = "demo"
DEMO_ADDRESS = "demo@localhost"
DEMO_SESSION_NAME = "Demo mailbox"
# Dovecot runs mail processes as nobody/nogroup when we are root.
_ROOT_MAIL_UID = 65534


class _AiosmtpdNoise(logging.Filter):
    """aiosmtpd logs a deprecation warning about ``Session.login_data`` on every AUTH."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "login_data is deprecated" not in record.getMessage()


logging.getLogger("mail.log").addFilter(_AiosmtpdNoise())


@dataclass(frozen=True)
class DemoPorts:
    imap: int = 10143
    imaps: int = 10993
    pop3: int = 10110
    pop3s: int = 10995
    smtp: int = 10587

    @classmethod
    def from_settings(cls) -> DemoPorts:
        """Ports from settings (if the project defines them) or the environment."""

        def port(name: str, default: int) -> int:
            value = getattr(settings, name, None)
            return int(value) if value is not None else envint(name, str(default))

        return cls(
            imap=port("MAILSESSIONS_DEMO_IMAP_PORT", cls.imap),
            imaps=port("MAILSESSIONS_DEMO_IMAPS_PORT", cls.imaps),
            pop3=port("MAILSESSIONS_DEMO_POP3_PORT", cls.pop3),
            pop3s=port("MAILSESSIONS_DEMO_POP3S_PORT", cls.pop3s),
            smtp=port("MAILSESSIONS_DEMO_SMTP_PORT", cls.smtp),
        )


# --- certificate -------------------------------------------------------------


def make_self_signed(cert_path: Path, key_path: Path, days: int = 365) -> None:
    """A self-signed certificate for localhost / 127.0.0.1 (key file 0600)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    key_path.touch(mode=0o600)
    key_path.chmod(0o600)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _cert_still_good(cert_path: Path, key_path: Path) -> bool:
    if not (cert_path.exists() and key_path.exists()):
        return False
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except ValueError:
        return False
    return cert.not_valid_after_utc - dt.datetime.now(dt.UTC) > dt.timedelta(days=7)


# --- Dovecot config ----------------------------------------------------------

_DOVECOT_CONFIG = """\
# Written by mailsessions.demo on every start: edits here are overwritten.
base_dir = {d}/run
state_dir = {d}/state
instance_name = {instance}-{imap_port}
log_path = {d}/dovecot.log
protocols = imap pop3
listen = {host}
default_login_user = {login_user}
default_internal_user = {internal_user}
default_internal_group = {internal_group}
first_valid_uid = 1
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
mail_location = maildir:{d}/mail/%u/Maildir
mail_uid = {uid}
mail_gid = {gid}
pop3_uidl_format = %08Xu%08Xv
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%n {d}/users
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={d}/mail/%n
}}
namespace inbox {{
  inbox = yes
  separator = /
  mailbox Sent {{
    special_use = \\Sent
    auto = subscribe
  }}
{extra_mailboxes}}}
service imap-login {{
  chroot =
  inet_listener imap {{
    port = {imap_port}
  }}
  inet_listener imaps {{
    port = {imaps_port}
    ssl = yes
  }}
}}
service pop3-login {{
  chroot =
  inet_listener pop3 {{
    port = {pop3_port}
  }}
  inet_listener pop3s {{
    port = {pop3s_port}
    ssl = yes
  }}
}}
# Without this, one wrong password from 127.0.0.1 delays later logins by seconds.
service anvil {{
  chroot =
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
"""


def dovecot_config(
    *,
    directory: Path,
    host: str,
    cert: Path,
    key: Path,
    imap_port: int,
    imaps_port: int,
    pop3_port: int,
    pop3s_port: int,
    uid: int,
    gid: int,
    login_user: str = "dovenull",
    internal_user: str = "dovecot",
    internal_group: str = "dovecot",
    instance: str = "mailsessions-demo",
    special_folders: tuple[str, ...] = ("Archive",),
) -> str:
    """A Dovecot config for IMAP and POP3 on loopback, implicit TLS and STARTTLS,
    users from a passwd-file, Maildir storage. Shared by the demo and the tests.

    Sent always exists; ``special_folders`` are created too (e.g. Archive).
    """
    extra = "".join(
        f"  mailbox {name} {{\n    special_use = \\{name}\n    auto = subscribe\n  }}\n"
        for name in special_folders
    )
    return _DOVECOT_CONFIG.format(
        d=directory,
        host=host,
        cert=cert,
        key=key,
        login_user=login_user,
        internal_user=internal_user,
        internal_group=internal_group,
        uid=uid,
        gid=gid,
        imap_port=imap_port,
        imaps_port=imaps_port,
        pop3_port=pop3_port,
        pop3s_port=pop3s_port,
        instance=instance,
        extra_mailboxes=extra,
    )


def dovecot_binary() -> str | None:
    return shutil.which("dovecot") or (
        "/usr/sbin/dovecot" if os.access("/usr/sbin/dovecot", os.X_OK) else None
    )


def pymap_binary() -> str | None:
    beside_python = Path(sys.executable).parent / "pymap"
    if os.access(beside_python, os.X_OK):
        return str(beside_python)
    return shutil.which("pymap")


# --- the server --------------------------------------------------------------


def _reachable(directory: Path) -> Path:
    """A directory Dovecot's unprivileged processes can reach.

    As root, Dovecot's auth and mail processes run as other users and need
    search permission on every parent of their files. A checkout under
    /root or a private temp dir does not grant it: then the demo keeps its
    files under /var/lib/mailsessions-demo/<hash of the path> instead.
    """
    if os.geteuid() != 0:
        return directory
    resolved = directory.resolve()
    for parent in [*reversed(resolved.parents)]:
        if parent.exists() and not parent.stat().st_mode & 0o001:
            digest = hashlib.sha256(str(resolved).encode()).hexdigest()[:12]
            fallback = Path("/var/lib/mailsessions-demo") / digest
            fallback.parent.mkdir(parents=True, exist_ok=True)
            fallback.parent.chmod(0o755)
            logger.info(
                "demo mail files live in %s (%s is not reachable by Dovecot)", fallback, parent
            )
            return fallback
    return directory


class DemoMailServer:
    """The demo mailbox: Dovecot (or pymap) for IMAP/POP3 plus SMTP that delivers into it.

    ``start()`` prepares the directory, starts the servers, waits until IMAP
    greets and seeds an empty INBOX; ``stop()`` stops both and waits for
    Dovecot to exit. ``imap_server`` is "dovecot", "pymap" or "" (none found)
    after start; pass it to the constructor to force one.
    """

    def __init__(
        self,
        directory: Path | None = None,
        ports: DemoPorts | None = None,
        *,
        imap_server: str | None = None,
        seed: bool = True,
    ) -> None:
        self.directory = _reachable(
            Path(directory) if directory else Path(settings.VAR_DIR) / "demo"
        )
        self.ports = ports or DemoPorts.from_settings()
        self.host = HOST
        self.imap_server = imap_server or ""
        self._forced = imap_server is not None
        self.seed = seed
        self.seeded = 0  # messages stored by the last start
        self.password_path = self.directory / "password"
        self.cert_path = self.directory / "tls" / "cert.pem"
        self.key_path = self.directory / "tls" / "key.pem"
        self.config_path = self.directory / "dovecot.conf"
        self.log_path = self.directory / "dovecot.log"
        self.process: subprocess.Popen | None = None
        self._smtp: Controller | None = None

    def __repr__(self) -> str:
        return f"<DemoMailServer {self.directory} imap={self.imap_server or 'none'}>"

    @property
    def password(self) -> str:
        return self.password_path.read_text().strip()

    @property
    def has_imap(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def has_pop3(self) -> bool:
        return self.imap_server == "dovecot"

    # --- lifecycle -------------------------------------------------------

    def start(self, timeout: float = 15.0) -> None:
        self._prepare()
        if not self._forced:
            self.imap_server = "dovecot" if dovecot_binary() else "pymap" if pymap_binary() else ""
        if self.imap_server == "dovecot":
            self._start_dovecot(timeout)
        elif self.imap_server == "pymap":
            self._start_pymap(timeout)
        else:
            logger.warning(
                "Demo mailbox: neither Dovecot nor pymap is installed, so only the demo "
                "SMTP server runs (mail sent to it is accepted and discarded). Install "
                "Dovecot (apt-get install dovecot-imapd dovecot-pop3d) or pymap "
                "(pip install pymap) for a demo mailbox to read."
            )
        try:
            if self.has_imap and self.seed:
                self.seeded = self.seed_if_empty()
            self._start_smtp()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self._smtp is not None:
            with contextlib.suppress(Exception):
                self._smtp.stop()
            self._smtp = None
        if self.process is not None:
            _terminate(self.process)
            self.process = None

    def __enter__(self) -> DemoMailServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _prepare(self) -> None:
        # The mail processes (another uid) must reach their Maildir below here.
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o755)
        (self.directory / "tls").mkdir(exist_ok=True)
        if not _cert_still_good(self.cert_path, self.key_path):
            make_self_signed(self.cert_path, self.key_path)
        if not self.password_path.exists():
            self.password_path.touch(mode=0o600)
            self.password_path.write_text(secrets.token_urlsafe(18) + "\n")
        self.password_path.chmod(0o600)

    # --- Dovecot -----------------------------------------------------------

    def _start_dovecot(self, timeout: float) -> None:
        d = self.directory
        if os.geteuid() == 0:
            login_user, internal_user, internal_group = "dovenull", "dovecot", "dovecot"
            uid = gid = _ROOT_MAIL_UID
        else:
            login_user = internal_user = pwd.getpwuid(os.getuid()).pw_name
            internal_group = _group_name(os.getgid())
            uid, gid = os.getuid(), os.getgid()
        mail = d / "mail"
        mail.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            for path in [mail, *mail.rglob("*")]:
                os.chown(path, uid, gid, follow_symlinks=False)
        users = d / "users"
        # Readable by Dovecot's auth process (internal user) only, not by everyone.
        users.touch(mode=0o600)
        users.chmod(0o600)
        if os.geteuid() == 0:
            os.chown(users, 0, grp.getgrnam(internal_group).gr_gid)
            users.chmod(0o640)
        users.write_text(f"{DEMO_USER}:{{PLAIN}}{self.password}\n")
        self.config_path.write_text(
            dovecot_config(
                directory=d,
                host=self.host,
                cert=self.cert_path,
                key=self.key_path,
                login_user=login_user,
                internal_user=internal_user,
                internal_group=internal_group,
                uid=uid,
                gid=gid,
                imap_port=self.ports.imap,
                imaps_port=self.ports.imaps,
                pop3_port=self.ports.pop3,
                pop3s_port=self.ports.pop3s,
            )
        )
        self._stop_stale_dovecot()
        binary = dovecot_binary()
        assert binary is not None
        self.process = subprocess.Popen(
            [binary, "-F", "-c", str(self.config_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self._wait_for_greeting(timeout, what="Dovecot")

    def _stop_stale_dovecot(self) -> None:
        """Stop a Dovecot left running by an earlier demo that was killed.

        Only the one recorded in this demo's own ``run/master.pid``, and only
        if that process really is a Dovecot.
        """
        pid_file = self.directory / "run" / "master.pid"
        try:
            pid = int(pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return
        if b"dovecot" not in cmdline:
            return
        logger.info("Demo mailbox: stopping Dovecot %s left from an earlier run", pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)

    # --- pymap -------------------------------------------------------------

    def _start_pymap(self, timeout: float) -> None:
        binary = pymap_binary()
        if binary is None:
            raise RuntimeError("pymap is not installed")
        # pymap's dict backend keeps mail in memory: each start is a fresh INBOX.
        self.process = subprocess.Popen(
            [
                binary,
                "--host",
                self.host,
                "--port",
                str(self.ports.imap),
                "--cert",
                str(self.cert_path),
                "--key",
                str(self.key_path),
                "dict",
                "--demo-user",
                DEMO_USER,
                "--demo-password",
                self.password,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self._wait_for_greeting(timeout, what="pymap")

    def _wait_for_greeting(self, timeout: float, *, what: str) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        # Ready once the IMAP port greets; an earlier connection may be dropped.
        while True:
            if self.process.poll() is not None:
                details = self._diagnostics()
                self.process = None
                raise RuntimeError(f"{what} exited at start: {details}")
            with contextlib.suppress(OSError):
                with socket.create_connection((self.host, self.ports.imap), timeout=1) as s:
                    if s.recv(64).startswith(b"* OK"):
                        return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{what} did not greet on port {self.ports.imap} in {timeout} s")
            time.sleep(0.02)

    def _diagnostics(self) -> str:
        stderr = ""
        if self.process is not None and self.process.stderr:
            with contextlib.suppress(Exception):
                stderr = self.process.stderr.read().decode(errors="replace")
        log = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return (stderr + log)[-2000:].replace(self.password, "********")

    # --- mailbox access (the demo's own IMAP client, plain port on loopback) --

    @contextlib.contextmanager
    def imap(self):
        """A logged-in imapclient session as the demo user."""
        client = IMAPClient(self.host, self.ports.imap, ssl=False, timeout=10)
        try:
            client.login(DEMO_USER, self.password)
            yield client
        finally:
            with contextlib.suppress(Exception):
                client.logout()

    def message_count(self, folder: str = "INBOX") -> int:
        with self.imap() as client:
            return int(client.folder_status(folder, [b"MESSAGES"])[b"MESSAGES"])

    def deliver(
        self,
        raw: bytes,
        *,
        folder: str = "INBOX",
        flags: tuple[str, ...] = (),
        when: dt.datetime | None = None,
    ) -> None:
        """Store one message in the demo mailbox (IMAP APPEND)."""
        self.deliver_many([(raw, flags, when)], folder=folder)

    def deliver_many(
        self, messages: list[tuple[bytes, tuple[str, ...], Any]], *, folder: str
    ) -> None:
        with self.imap() as client:
            if not client.folder_exists(folder):
                client.create_folder(folder)
            for raw, flags, when in messages:
                client.append(folder, raw, flags=flags, msg_time=when)

    def seed_if_empty(self) -> int:
        """Fill an empty INBOX with the demo messages; returns how many were stored."""
        if self.message_count("INBOX"):
            return 0
        inbox: list[tuple[bytes, tuple[str, ...], Any]] = []
        archive: list[tuple[bytes, tuple[str, ...], Any]] = []
        for folder, raw, flags, when in seed_messages():
            (inbox if folder == "INBOX" else archive).append((raw, flags, when))
        self.deliver_many(archive, folder="Archive")
        self.deliver_many(inbox, folder="INBOX")
        logger.info("Demo mailbox: seeded INBOX with %d messages", len(inbox))
        return len(inbox)

    # --- SMTP --------------------------------------------------------------

    def _start_smtp(self) -> None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_path, self.key_path)
        controller = Controller(
            _DeliveringHandler(self),
            hostname=self.host,
            port=self.ports.smtp,
            server_hostname="localhost",
            ready_timeout=10,
            authenticator=self._authenticate,
            auth_required=True,
            auth_require_tls=True,
            require_starttls=True,
            tls_context=context,
            timeout=60,
        )
        controller.start()
        self._smtp = controller

    def _authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            login = auth_data.login.decode("utf-8", "replace")
            if login in (DEMO_USER, DEMO_ADDRESS) and hmac.compare_digest(
                auth_data.password, self.password.encode()
            ):
                return AuthResult(success=True, auth_data=auth_data)
        # handled=False: aiosmtpd answers the standard "535 5.7.8".
        return AuthResult(success=False, handled=False)


class _DeliveringHandler:
    """Accepts every recipient and stores each message in demo's INBOX."""

    def __init__(self, server: DemoMailServer) -> None:
        self.server = server

    async def handle_RCPT(self, smtp, session, envelope, address, rcpt_options):
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, smtp, session, envelope):
        if not self.server.has_imap:
            logger.info("Demo SMTP: accepted a message and discarded it (no demo mailbox)")
            return "250 2.0.0 OK (no demo mailbox running: message discarded)"
        received = (
            f"Received: from {session.host_name or 'unknown'} ({session.peer[0]})\r\n"
            f"\tby localhost (Mail Sessions demo) with ESMTPSA;\r\n"
            f"\t{format_datetime(dt.datetime.now(dt.UTC))}\r\n"
        ).encode()
        loop = asyncio.get_running_loop()
        try:
            # imapclient blocks: keep it off the SMTP event loop.
            await loop.run_in_executor(
                None, self.server.deliver, received + envelope.original_content
            )
        except Exception:
            logger.exception("Demo SMTP: could not store a message in the demo mailbox")
            return "451 4.3.0 Could not store the message in the demo mailbox, try again"
        return "250 2.0.0 OK delivered to the demo mailbox"


def _terminate(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
    if process.stderr:
        process.stderr.close()


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


# --- the session the demo user gets in the app --------------------------------


def ensure_demo_session(user, *, server: DemoMailServer | None = None):
    """Create or update ``user``'s "Demo mailbox" session for the running demo.

    Read and send: IMAP STARTTLS and SMTP STARTTLS on 127.0.0.1 as "demo",
    certificate verification off (the demo's certificate is self-signed, and
    the UI says so), test mails to demo@localhost. Raises FileNotFoundError
    when the demo has never been started (no password yet).
    """
    from mailsessions.models import Encryption, IncomingProtocol, MailSession, Mode
    from mailsessions.services import mail_session_save

    server = server or DemoMailServer()
    password = server.password
    existing = MailSession.objects.filter(owner=user, name=DEMO_SESSION_NAME).first()
    return mail_session_save(
        owner=user,
        name=DEMO_SESSION_NAME,
        mode=Mode.READ_SEND,
        incoming={
            "in_protocol": IncomingProtocol.IMAP,
            "in_encryption": Encryption.STARTTLS,
            "in_allow_plaintext": False,
            "in_host": server.host,
            "in_port": server.ports.imap,
            "in_username": DEMO_USER,
            "in_verify_certificate": False,
        },
        outgoing={
            "out_host": server.host,
            "out_port": server.ports.smtp,
            "out_encryption": Encryption.STARTTLS,
            "out_allow_plaintext": False,
            "out_verify_certificate": False,
            "out_use_different_credentials": False,
            "out_no_auth": False,
            "out_username": "",
            "out_sender": DEMO_ADDRESS,
            "test_mail_to": DEMO_ADDRESS,
        },
        in_password=password,
        instance=existing,
    )


# --- seed messages -----------------------------------------------------------

_PEOPLE = [
    ("Alice Martin", "alice.martin@example.com"),
    ("Bob Okafor", "bob@okafor.example.net"),
    ("Chloé Dubois", "chloe.dubois@example.fr"),
    ("Dmitri Volkov", "d.volkov@example.org"),
    ("Eva Schmidt", "eva.schmidt@example.de"),
    ("Farid Haddad", "farid@example.com"),
    ("GitHub", "notifications@github.example"),
    ("Billing", "billing@cloudhost.example"),
    ("The Weekly Digest", "newsletter@digest.example"),
    ("Hana Sato", "hana.sato@example.jp"),
]
_TOPICS = [
    "Quarterly report draft",
    "Lunch on Thursday?",
    "Build #{n} failed on main",
    "Your invoice {n} is ready",
    "Meeting notes – roadmap review",
    "Re: server migration plan",
    "Holiday schedule",
    "Weekly digest #{n}: what's new",
    "Password reset requested",
    "Conference travel booking",
    "Feedback on the new dashboard",
    "Re: Re: printer on 3rd floor",
]
_BODIES = [
    "Hi,\n\nplease find my comments below. Nothing urgent, but it would be good "
    "to settle this before Friday.\n\nThanks,\n{name}",
    "Hello,\n\njust a quick reminder about this. Let me know if anything is unclear.\n\n"
    "Best regards,\n{name}",
    "Hi there,\n\nthe numbers look good overall; two items still need a second look "
    "(see the list in the previous mail).\n\nCheers,\n{name}",
]
_NON_ASCII = [
    ("Chloé Dubois", "chloe.dubois@example.fr", "Grüße aus München – Übersicht für März"),
    ("Hana Sato", "hana.sato@example.jp", "会議の議事録 (meeting minutes)"),
    ("Farid Haddad", "farid@example.com", "🎉 Launch day: thank you all!"),
]
# A 1×1 PNG, small enough to keep the seed tiny.
_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c63f8cfc0f00f00040101005ec2b8ae0000000049454e44ae426082"
)


def seed_messages(count: int = 40) -> list[tuple[str, bytes, tuple[str, ...], dt.datetime]]:
    """The demo messages as (folder, raw, flags, date): the same every time.

    Varied senders and subjects, some with an HTML alternative, a few with
    small attachments, non-ASCII subjects, a reply thread, read/flagged
    flags; most go to INBOX and a handful to Archive.
    """
    rng = random.Random(20240601)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    result = []
    thread_root: str | None = None
    for n in range(count):
        name, address = _PEOPLE[n % len(_PEOPLE)]
        subject = _TOPICS[(n * 7) % len(_TOPICS)].format(n=1000 + n)
        if n < len(_NON_ASCII) * 9 and n % 9 == 4:
            name, address, subject = _NON_ASCII[n // 9]
        when = now - dt.timedelta(hours=n * 17 + rng.randint(0, 16), minutes=rng.randint(0, 59))
        message = EmailMessage()
        message["From"] = f"{name} <{address}>"
        message["To"] = f"Demo <{DEMO_ADDRESS}>"
        if n % 6 == 1:
            message["Cc"] = "Team <team@example.com>"
        message["Subject"] = subject
        message["Date"] = format_datetime(when)
        message["Message-ID"] = make_msgid(f"seed{n}", domain="demo.localhost")
        if subject.startswith("Re:"):
            if thread_root:
                message["In-Reply-To"] = thread_root
                message["References"] = thread_root
            thread_root = message["Message-ID"]
        text = _BODIES[n % len(_BODIES)].format(name=name.split()[0])
        message.set_content(text)
        if n % 3 == 0:
            paragraphs = "".join(f"<p>{line}</p>" for line in text.split("\n\n"))
            message.add_alternative(
                f"<html><body style='font-family:sans-serif'>{paragraphs}"
                f"<p><a href='https://example.com/item/{n}'>Open in the browser</a></p>"
                "</body></html>",
                subtype="html",
            )
        if n % 10 == 3:
            rows = "\n".join(f"2024-{m:02d},{rng.randint(100, 999)}" for m in range(1, 7))
            message.add_attachment(
                f"month,amount\n{rows}\n".encode(),
                maintype="text",
                subtype="csv",
                filename=f"report-{n}.csv",
            )
        if n % 10 == 7:
            message.add_attachment(_PNG, maintype="image", subtype="png", filename="pixel.png")
        flags: tuple[str, ...] = ()
        if n > 5 and n % 4 != 0:
            flags += ("\\Seen",)
        if n % 11 == 2:
            flags += ("\\Flagged",)
        folder = "Archive" if n >= count - 5 else "INBOX"
        result.append(
            (folder, message.as_bytes(policy=message.policy.clone(linesep="\r\n")), flags, when)
        )
    return result
