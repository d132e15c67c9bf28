"""The staged connection test, built on the backends.

A diagnosis walks the stages a connection goes through (name → TCP → TLS →
greeting → authentication → mailbox), records each stage's outcome,
duration and a message for a person, and stops at the first failing stage
with the likely fix. The DNS, TCP and implicit-TLS stages probe with plain
sockets so that each can be named on its own; the later stages use the same
backend the operations use, so a passing test means the operations can
connect too.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from urllib.parse import urlsplit

from mailsessions.backends import get_backend_class
from mailsessions.backends.base import (
    BackendError,
    ConnectionFailed,
    IncomingBackend,
    OutgoingBackend,
    Security,
    ServerConfig,
)
from mailsessions.backends.tls import client_context, describe, explain_ssl_error
from mailsessions.policy import TargetNotAllowed, TargetPolicy


class Outcome:
    PASSED = "passed"
    FAILED = "failed"
    WARNING = "warning"  # passed, but a person should know (e.g. no certificate check)


STAGE_TITLES = {
    "policy": "Target allowed",
    "dns": "Resolve the name",
    "tcp": "Open TCP connection",
    "tls": "TLS handshake",
    "greeting": "Server greeting",
    "starttls": "STARTTLS",
    "capabilities": "Capabilities",
    "auth": "Authenticate",
    "mailbox": "Open the inbox",
    "folders": "List folders",
    "send": "Send test mail",
}

DEFAULT_PORT_HINTS = {
    ("imap", Security.SSL): 993,
    ("imap", Security.STARTTLS): 143,
    ("pop3", Security.SSL): 995,
    ("pop3", Security.STARTTLS): 110,
    ("smtp", Security.SSL): 465,
    ("smtp", Security.STARTTLS): 587,
}


@dataclass
class Stage:
    name: str
    outcome: str
    message: str
    duration_ms: int | None = None
    details: dict = field(default_factory=dict)

    @property
    def title(self) -> str:
        return STAGE_TITLES.get(self.name, self.name)

    def as_dict(self) -> dict:
        return {**asdict(self), "title": self.title}


class StageFailed(Exception):
    """Stops the diagnosis; the failing stage is already recorded."""


@dataclass
class Diagnosis:
    target: str
    stages: list[Stage] = field(default_factory=list)
    on_stage: Callable[[Diagnosis], None] | None = None

    @property
    def passed(self) -> bool:
        return bool(self.stages) and all(s.outcome != Outcome.FAILED for s in self.stages)

    @property
    def summary(self) -> str:
        failed = next((s for s in self.stages if s.outcome == Outcome.FAILED), None)
        if failed:
            return f"{failed.title} failed: {failed.message}"
        warnings = [s.message for s in self.stages if s.outcome == Outcome.WARNING]
        return "All stages passed" + (f" ({'; '.join(warnings)})" if warnings else "") + "."

    def record(self, stage: Stage) -> Stage:
        self.stages.append(stage)
        if self.on_stage:
            self.on_stage(self)
        return stage

    @contextmanager
    def stage(self, name: str) -> Iterator[dict]:
        """Time a stage; the body fills ``info`` (message, details, outcome).

        A BackendError or TargetNotAllowed fails the stage with its message
        and stops the diagnosis; anything else is a bug and propagates.
        """
        info: dict = {"message": "", "details": {}, "outcome": Outcome.PASSED}
        started = time.monotonic()
        try:
            yield info
        except (BackendError, TargetNotAllowed) as exc:
            self.record(
                Stage(
                    name,
                    Outcome.FAILED,
                    str(exc),
                    _ms(started),
                    {"retryable": getattr(exc, "retryable", False)},
                )
            )
            raise StageFailed from None
        self.record(Stage(name, info["outcome"], info["message"], _ms(started), info["details"]))


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


# --- the probes ---------------------------------------------------------------


def _resolve(diagnosis: Diagnosis, host: str, port: int, policy: TargetPolicy) -> list[str]:
    with diagnosis.stage("dns") as info:
        literal = host.strip("[]")
        try:
            socket.inet_pton(socket.AF_INET6 if ":" in literal else socket.AF_INET, literal)
            addresses = [literal]
            info["message"] = f"{literal} is an IP address: no lookup needed"
        except OSError:
            try:
                infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except (socket.gaierror, UnicodeError):
                raise ConnectionFailed(
                    f"the name {host} does not resolve: check the server address for typos",
                    retryable=False,
                ) from None
            addresses = list(dict.fromkeys(i[4][0] for i in infos))
            info["message"] = f"{host} resolves to {', '.join(addresses)}"
        info["details"] = {"addresses": addresses}
    with diagnosis.stage("policy") as info:
        policy.check(host, port, addresses)
        info["message"] = f"{host}:{port} may be reached from here"
    return addresses


def _tcp(
    diagnosis: Diagnosis,
    host: str,
    addresses: list[str],
    port: int,
    timeout: float,
    protocol: str,
    security: Security,
) -> None:
    with diagnosis.stage("tcp") as info:
        last: Exception | None = None
        for address in addresses:
            try:
                with socket.create_connection((address, port), timeout=timeout):
                    info["message"] = f"connected to {address} port {port}"
                    info["details"] = {"address": address}
                    return
            except TimeoutError as exc:
                last = exc
            except OSError as exc:
                last = exc
        hint = _port_hint(protocol, security, port)
        if isinstance(last, TimeoutError):
            raise ConnectionFailed(
                f"nothing answers on port {port} of {host} within {timeout:g} s: a firewall "
                f"may drop the connection, or the port is wrong{hint}"
            )
        if isinstance(last, ConnectionRefusedError):
            raise ConnectionFailed(
                f"connection refused by {host} port {port}: no mail service listens there{hint}"
            )
        raise ConnectionFailed(f"could not connect to {host} port {port} ({last}){hint}")


def _port_hint(protocol: str, security: Security, port: int) -> str:
    expected = DEFAULT_PORT_HINTS.get((protocol, security))
    if expected and expected != port:
        return f" ({protocol.upper()} with {security.name.replace('SSL', 'SSL/TLS')} usually uses port {expected})"
    return ""


def _implicit_tls(
    diagnosis: Diagnosis, host: str, address: str, port: int, config: ServerConfig
) -> None:
    with diagnosis.stage("tls") as info:
        context = client_context(config.verify_certificate)
        try:
            with socket.create_connection((address, port), timeout=config.timeout) as raw:
                with context.wrap_socket(raw, server_hostname=host.strip("[]")) as tls_sock:
                    tls = describe(tls_sock, config.verify_certificate)
        except ssl.SSLError as exc:
            error = explain_ssl_error(exc, host, port)
            if "does not speak TLS right away" in error.message:
                error.message = (
                    f"the server on port {port} answers in plain text, not TLS: it offers "
                    "STARTTLS (or no encryption) there; choose STARTTLS"
                )
            raise error from None
        except TimeoutError:
            raise ConnectionFailed(
                f"the TLS handshake with {host}:{port} got no answer within {config.timeout:g} s"
            ) from None
        except OSError as exc:
            raise ConnectionFailed(
                f"the connection dropped during the TLS handshake ({exc})"
            ) from None
        _describe_tls(info, tls)


def _describe_tls(info: dict, tls) -> None:
    info["details"] = {
        "version": tls.version,
        "cipher": tls.cipher,
        "subject": tls.subject,
        "issuer": tls.issuer,
        "not_after": tls.not_after,
        "verified": tls.verified,
    }
    info["message"] = (
        f"{tls.version}, certificate {tls.subject or '?'} issued by {tls.issuer or '?'}, valid until {tls.not_after or '?'}"
    )
    if not tls.verified:
        info["outcome"] = Outcome.WARNING
        info["message"] += "; certificate NOT verified (verification is off for this session)"


def _server_speaks_tls_first(host: str, address: str, port: int, timeout: float) -> bool:
    """Whether the port completes a TLS handshake (an implicit-TLS port)."""
    context = client_context(False)
    try:
        with socket.create_connection((address, port), timeout=timeout) as raw:
            with context.wrap_socket(raw, server_hostname=host):
                return True
    except (OSError, ssl.SSLError):
        return False


def _connect_backend(
    diagnosis: Diagnosis, backend, host: str, address: str, port: int, config: ServerConfig
) -> None:
    if config.security == Security.NONE:
        diagnosis.record(
            Stage(
                "starttls",
                Outcome.WARNING,
                "no encryption: the password and mail travel in clear text",
                0,
            )
        )
    with diagnosis.stage("greeting") as info:
        try:
            backend.connect()
        except ConnectionFailed as exc:
            if config.security != Security.SSL and _server_speaks_tls_first(
                host, address, port, min(config.timeout, 5)
            ):
                raise ConnectionFailed(
                    f"the server on port {port} expects TLS from the first byte (implicit TLS), "
                    "not STARTTLS or plain text: choose SSL/TLS",
                    retryable=False,
                ) from exc
            raise
        info["message"] = backend.greeting.strip()[:300] or "connected"
        info["details"] = {"capabilities": list(backend.capabilities)[:60]}
    if config.security == Security.STARTTLS and backend.tls is not None:
        with diagnosis.stage("starttls") as info:
            _describe_tls(info, backend.tls)


# --- entry points -------------------------------------------------------------


def endpoint(protocol: str, config: ServerConfig) -> tuple[str, int, Security]:
    if protocol == "ews" and config.ews_endpoint:
        parts = urlsplit(config.ews_endpoint)
        security = Security.SSL if parts.scheme == "https" else Security.NONE
        return (
            parts.hostname or "",
            parts.port or (443 if parts.scheme == "https" else 80),
            security,
        )
    return config.host, config.port, config.security


def diagnose_incoming(
    protocol: str, config: ServerConfig, *, on_stage=None, policy: TargetPolicy | None = None
) -> Diagnosis:
    """DNS → TCP → TLS/STARTTLS → greeting → auth → inbox → folders."""
    host, port, security = endpoint(protocol, config)
    diagnosis = Diagnosis(target=f"{protocol.upper()} {host}:{port}", on_stage=on_stage)
    backend: IncomingBackend = get_backend_class(protocol)(config)  # type: ignore[assignment]
    try:
        address = _common_stages(diagnosis, protocol, host, port, security, config, policy)
        _connect_backend(diagnosis, backend, host, address, port, config)
        with diagnosis.stage("auth") as info:
            backend.login()
            info["message"] = f"logged in as {config.username}"
        with diagnosis.stage("mailbox") as info:
            inbox = backend.folder_info("INBOX")
            info["message"] = f"INBOX holds {inbox.message_count} messages" + (
                f", {inbox.unseen_count} unread" if inbox.unseen_count is not None else ""
            )
            info["details"] = {"messages": inbox.message_count, "unseen": inbox.unseen_count}
        if "folders" in backend.features:
            with diagnosis.stage("folders") as info:
                folders = backend.list_folders()
                shown = ", ".join(folders[:12]) + (" …" if len(folders) > 12 else "")
                info["message"] = f"{len(folders)} folders: {shown}"
                info["details"] = {"folders": folders[:200]}
    except StageFailed:
        pass
    finally:
        backend.close()
    return diagnosis


def diagnose_outgoing(
    config: ServerConfig,
    *,
    protocol: str = "smtp",
    send_to: str = "",
    sender: str = "",
    message: bytes = b"",
    on_stage=None,
    policy: TargetPolicy | None = None,
) -> Diagnosis:
    """DNS → TCP → TLS → EHLO/STARTTLS → AUTH (or none) → optionally a test mail.

    ``protocol`` is "smtp", or "ews" for sessions that send through Exchange.
    """
    host, port, security = endpoint(protocol, config)
    diagnosis = Diagnosis(target=f"{protocol.upper()} {host}:{port}", on_stage=on_stage)
    backend: OutgoingBackend = get_backend_class(protocol)(config)  # type: ignore[assignment]
    try:
        address = _common_stages(diagnosis, protocol, host, port, security, config, policy)
        _connect_backend(diagnosis, backend, host, address, port, config)
        if protocol != "smtp":
            with diagnosis.stage("auth") as info:
                backend.login()
                info["message"] = f"logged in as {config.username}"
            if send_to:
                _send_stage(diagnosis, backend, message, sender, send_to)
            return diagnosis
        with diagnosis.stage("capabilities") as info:
            mechanisms = getattr(backend, "auth_mechanisms", ())
            info["message"] = (
                f"AUTH offered: {', '.join(mechanisms)}"
                if mechanisms
                else "the server offers no AUTH here"
            )
            info["details"] = {"auth_mechanisms": list(mechanisms)}
        with diagnosis.stage("auth") as info:
            backend.login()
            if config.username:
                info["message"] = f"logged in as {config.username}"
            else:
                # Without a login, ask whether the server takes mail at all.
                said = backend.check_sender(sender or "postmaster@localhost")
                info["message"] = (
                    f"no authentication (as configured); the server accepts the sender ({said})"
                )
        if send_to:
            _send_stage(diagnosis, backend, message, sender, send_to)
    except StageFailed:
        pass
    finally:
        backend.close()
    return diagnosis


def _send_stage(diagnosis: Diagnosis, backend, message: bytes, sender: str, send_to: str) -> None:
    with diagnosis.stage("send") as info:
        result = backend.send(message, sender=sender, recipients=[send_to])
        if result.refused:
            raise BackendError(
                "the server refused "
                + "; ".join(f"{rcpt}: {why}" for rcpt, why in result.refused.items())
            )
        info["message"] = f"sent to {send_to}; the server said: {result.reply}"
        info["details"] = {"reply": result.reply}


def _common_stages(diagnosis, protocol, host, port, security, config, policy) -> str:
    policy = policy or TargetPolicy.from_settings()
    addresses = _resolve(diagnosis, host, port, policy)
    _tcp(diagnosis, host, addresses, port, config.timeout, protocol, security)
    address = diagnosis.stages[-1].details["address"]
    if security == Security.SSL:
        _implicit_tls(diagnosis, host, address, port, config)
    return address
