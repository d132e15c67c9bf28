"""Real aiosmtpd servers on loopback for the SMTP tests (a pytest plugin).

Four session-scoped servers, each with its own free port:

- ``smtp_noauth``: plain SMTP, no TLS, no AUTH (an open relay on a LAN).
- ``smtp_auth_starttls``: STARTTLS required before anything else, then AUTH
  PLAIN/LOGIN required (submission on 587).
- ``smtp_ssl``: implicit TLS from the first byte, AUTH required (SMTPS on 465).
- ``smtp_auth_plain``: AUTH required, no TLS at all (to test "the server wants
  a login but the session has none").

Personas: alice (``alice-secret-pw``) and bob (``bob-secret-pw``) may log in
and send to anyone. Any recipient address containing ``reject`` is refused
with 550, one containing ``tempfail`` with 451; everything else is accepted
and recorded.

Every server records each accepted message (envelope, raw bytes, which
connection carried it) so tests can compare what arrived with what was sent
and count how many SMTP connections a backend used.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from mailsessions.backends.base import Security, ServerConfig
from tests.servers.certs import CertPair, make_self_signed

USERS: dict[str, str] = {
    "alice": "alice-secret-pw",
    "bob": "bob-secret-pw",
}

# Substring of a recipient address -> the reply its RCPT TO gets.
DEFAULT_RCPT_RULES: dict[str, str] = {
    "reject": "550 5.1.1 Recipient address rejected: user unknown",
    "tempfail": "451 4.3.0 Mailbox temporarily unavailable, try again later",
}


class _ExpectedWarningsFilter(logging.Filter):
    """aiosmtpd logs a deprecation warning about ``Session.login_data`` on every
    successful AUTH, and one per connection about AUTH without TLS (which
    ``smtp_auth_plain`` and ``smtp_ssl`` do on purpose): noise in every test."""

    NOISE = ("login_data is deprecated", "auth_required == True but auth_require_tls == False")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(noise in message for noise in self.NOISE)


logging.getLogger("mail.log").addFilter(_ExpectedWarningsFilter())


@dataclass(frozen=True)
class ReceivedMessage:
    """One message the server accepted (after DATA)."""

    mail_from: str
    rcpt_tos: tuple[str, ...]  # only the accepted recipients
    content: bytes  # exactly as received: CRLF line ends, dot-unstuffed
    connection_id: int  # 1, 2, ... per TCP connection, stable across STARTTLS
    peer: tuple[str, int]  # the client's (address, port)
    auth_user: str | None  # the login used, None without AUTH
    tls: bool  # whether the message travelled over TLS (STARTTLS or implicit)


class _Handler:
    """aiosmtpd handler: refuses recipients by rule, records accepted messages."""

    def __init__(self, server: SMTPServer) -> None:
        self.server = server

    async def handle_RCPT(self, smtp, session, envelope, address, rcpt_options):
        for needle, reply in self.server.rcpt_rules.items():
            if needle in address.lower():
                return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, smtp, session, envelope):
        auth = session.auth_data
        auth_user = auth.login.decode() if isinstance(auth, LoginPassword) else None
        received = ReceivedMessage(
            mail_from=envelope.mail_from,
            rcpt_tos=tuple(envelope.rcpt_tos),
            content=envelope.original_content,
            connection_id=getattr(smtp, "connection_id", 0),
            peer=tuple(session.peer[:2]),
            auth_user=auth_user,
            tls=smtp.transport.get_extra_info("sslcontext") is not None or session.ssl is not None,
        )
        number = self.server._record(received)
        return f"250 2.0.0 OK queued as test-{number}"


def _authenticator(server, session, envelope, mechanism, auth_data):
    if isinstance(auth_data, LoginPassword):
        login = auth_data.login.decode("utf-8", "replace")
        password = auth_data.password.decode("utf-8", "replace")
        if USERS.get(login) == password:
            return AuthResult(success=True, auth_data=auth_data)
    # handled=False: aiosmtpd answers the standard "535 5.7.8".
    return AuthResult(success=False, handled=False)


class _CountingSMTP(SMTP):
    """Tells the owning SMTPServer about every new TCP connection.

    aiosmtpd calls ``connection_made`` again after STARTTLS on the same
    connection; only the first call is a new connection.
    """

    def __init__(self, owner: SMTPServer, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._owner = owner
        self.connection_id = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        new_connection = self._original_transport is None and self.transport is None
        super().connection_made(transport)
        if new_connection:
            self.connection_id = self._owner._connected(self)

    def connection_lost(self, error: Exception | None) -> None:
        self._owner._disconnected(self)
        super().connection_lost(error)


class _Controller(Controller):
    def __init__(self, owner: SMTPServer, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._owner = owner

    def factory(self):
        return _CountingSMTP(self._owner, self.handler, **self.SMTP_kwargs)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_tls_context(cert: CertPair) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert.cert, cert.key)
    return context


class SMTPServer:
    """An aiosmtpd ``Controller`` on 127.0.0.1 with a recording handler.

    ``security`` is the :class:`Security` a client must choose to talk to it;
    ``auth_required`` says whether MAIL is refused (530) without AUTH.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        name: str,
        *,
        security: Security = Security.NONE,
        auth_required: bool = False,
        cert: CertPair | None = None,
    ) -> None:
        self.name = name
        self.security = security
        self.auth_required = auth_required
        self.cert = cert
        self.port = 0
        self.rcpt_rules: dict[str, str] = dict(DEFAULT_RCPT_RULES)
        self.messages: list[ReceivedMessage] = []
        self.connections = 0  # TCP connections since start / the last clear()
        self._live: set[_CountingSMTP] = set()
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._controller: _Controller | None = None

    def __repr__(self) -> str:
        return f"<SMTPServer {self.name} {self.host}:{self.port} ({self.security})>"

    # --- lifecycle --------------------------------------------------------

    def _controller_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"authenticator": _authenticator, "timeout": 30}
        if self.security is Security.STARTTLS:
            assert self.cert is not None
            kwargs.update(
                tls_context=server_tls_context(self.cert),
                require_starttls=True,
                auth_required=self.auth_required,
                auth_require_tls=True,
            )
        elif self.security is Security.SSL:
            assert self.cert is not None
            # aiosmtpd counts only STARTTLS as TLS: with auth_require_tls left
            # on it would never offer AUTH on the implicit-TLS port.
            kwargs.update(
                ssl_context=server_tls_context(self.cert),
                auth_required=self.auth_required,
                auth_require_tls=False,
            )
        elif self.auth_required:
            kwargs.update(auth_required=True, auth_require_tls=False)
        else:
            # No TLS here, so requiring TLS for AUTH means AUTH is never offered.
            kwargs.update(auth_required=False, auth_require_tls=True)
        return kwargs

    def start(self) -> None:
        last_error: Exception | None = None
        for _ in range(5):  # another process may grab the free port in between
            port = free_port()
            controller = _Controller(
                self,
                _Handler(self),
                hostname=self.host,
                port=port,
                server_hostname="mail.test",
                ready_timeout=10,
                **self._controller_kwargs(),
            )
            try:
                controller.start()
            except (OSError, RuntimeError) as exc:
                last_error = exc
                continue
            self._controller, self.port = controller, port
            # The controller's own readiness probe was a connection: forget it.
            self.clear()
            return
        raise RuntimeError(f"could not start {self.name}: {last_error}")

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    # --- what tests use ---------------------------------------------------

    def clear(self) -> None:
        """Forget received messages and reset the connection count."""
        with self._lock:
            self.messages.clear()
            self.connections = 0

    def wait_for(self, n: int, timeout: float = 5.0) -> list[ReceivedMessage]:
        """Block until at least ``n`` messages arrived; returns them all.

        Raises AssertionError on timeout (with what did arrive).
        """
        deadline = time.monotonic() + timeout
        with self._arrived:
            while len(self.messages) < n:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"{self.name}: expected {n} messages within {timeout} s, "
                        f"got {len(self.messages)}"
                    )
                self._arrived.wait(remaining)
            return list(self.messages)

    def drop_connections(self) -> int:
        """Close every open client connection from the server side, as a
        server restarting or an idle timeout would. Returns how many."""
        assert self._controller is not None
        loop = self._controller.loop
        with self._lock:
            live = list(self._live)
        done = threading.Event()

        def close_all() -> None:
            for protocol in live:
                if protocol.transport is not None:
                    protocol.transport.close()
                if protocol._original_transport is not None:
                    protocol._original_transport.close()
            done.set()

        loop.call_soon_threadsafe(close_all)
        done.wait(5)
        return len(live)

    def config(self, **overrides: Any) -> ServerConfig:
        """A ServerConfig for this server (alice's login when AUTH is required)."""
        values: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "security": self.security,
            "verify_certificate": False,
            "timeout": 5.0,
        }
        if self.auth_required:
            values.update(username="alice", password=USERS["alice"])
        values.update(overrides)
        return ServerConfig(**values)

    # --- called from the server thread --------------------------------------

    def _record(self, message: ReceivedMessage) -> int:
        with self._arrived:
            self.messages.append(message)
            self._arrived.notify_all()
            return len(self.messages)

    def _connected(self, protocol: _CountingSMTP) -> int:
        with self._lock:
            self.connections += 1
            self._live.add(protocol)
            return self.connections

    def _disconnected(self, protocol: _CountingSMTP) -> None:
        with self._lock:
            self._live.discard(protocol)


def smtp_config(server: SMTPServer, **overrides: Any) -> ServerConfig:
    """A ServerConfig pointing at ``server``; keyword arguments override fields.

    Defaults: the server's security, verify_certificate=False (self-signed),
    timeout=5, and alice's credentials when the server requires AUTH.
    """
    return server.config(**overrides)


# --- fixtures ---------------------------------------------------------------


@pytest.fixture(scope="session")
def smtp_cert(tmp_path_factory: pytest.TempPathFactory) -> CertPair:
    return make_self_signed(Path(tmp_path_factory.mktemp("smtp-cert")))


def _serve(server: SMTPServer) -> Iterator[SMTPServer]:
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def smtp_noauth() -> Iterator[SMTPServer]:
    yield from _serve(SMTPServer("smtp_noauth"))


@pytest.fixture(scope="session")
def smtp_auth_starttls(smtp_cert: CertPair) -> Iterator[SMTPServer]:
    yield from _serve(
        SMTPServer(
            "smtp_auth_starttls", security=Security.STARTTLS, auth_required=True, cert=smtp_cert
        )
    )


@pytest.fixture(scope="session")
def smtp_ssl(smtp_cert: CertPair) -> Iterator[SMTPServer]:
    yield from _serve(
        SMTPServer("smtp_ssl", security=Security.SSL, auth_required=True, cert=smtp_cert)
    )


@pytest.fixture(scope="session")
def smtp_auth_plain() -> Iterator[SMTPServer]:
    yield from _serve(SMTPServer("smtp_auth_plain", auth_required=True))


@pytest.fixture(scope="session")
def smtp_silent_listener() -> Iterator[tuple[str, int]]:
    """A TCP port that accepts connections (kernel backlog) and never says a
    word: any client waiting for a greeting runs into its timeout."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    try:
        yield sock.getsockname()
    finally:
        sock.close()


@pytest.fixture
def smtp_closed_port() -> int:
    """A loopback port nothing listens on (connection refused)."""
    return free_port()
