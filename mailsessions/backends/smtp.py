"""Sending mail over SMTP with smtplib.

One open backend is one SMTP connection; ``send()`` runs one MAIL/RCPT/DATA
transaction on it and can be called any number of times between ``open()``
and ``close()``. The transaction is driven command by command (not through
``sendmail``) so that the server's final reply to DATA, e.g. ``250 2.0.0 Ok:
queued as 4Xk2``, reaches the caller: that queue id is what a person quotes
to the mail administrator.
"""

from __future__ import annotations

import base64
import functools
import re
import smtplib
import socket
import ssl
from collections.abc import Sequence
from typing import ClassVar

from mailsessions.backends.base import (
    AuthenticationFailed,
    BackendError,
    ConnectionFailed,
    NotSupported,
    OutgoingBackend,
    ProtocolError,
    Security,
    SendResult,
    TemporaryFailure,
    TLSFailed,
)
from mailsessions.backends.tls import client_context, describe, explain_ssl_error

# Bare CR or LF becomes CRLF: servers reject (or, worse, misread) bare line
# ends inside DATA, and smtplib only fixes them for str messages.
_LINE_ENDS = re.compile(rb"\r\n|\r(?!\n)|\n")


@functools.cache
def _local_hostname() -> str:
    # smtplib would look this up on every connection; the name is what we
    # announce in EHLO, and some servers reject a bare "localhost".
    return socket.getfqdn()


def _is_ascii(text: str) -> bool:
    return text.isascii()


class SMTPBackend(OutgoingBackend):
    """SMTP submission or relay: implicit TLS, STARTTLS or plain; AUTH optional.

    After ``connect()``: ``greeting`` is the 220 banner, ``capabilities`` the
    EHLO extension lines (``"SIZE 33554432"``, ``"AUTH PLAIN LOGIN"``, ...; after
    STARTTLS, the ones the server announced inside TLS) and
    ``auth_mechanisms`` the AUTH mechanisms offered, upper case.
    """

    protocol: ClassVar[str] = "smtp"

    def __init__(self, config) -> None:
        super().__init__(config)
        self.auth_mechanisms: tuple[str, ...] = ()
        self.authenticated = False
        self._smtp: smtplib.SMTP | None = None

    # --- connection -----------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether the connection is still usable as far as we know."""
        return self._smtp is not None and self._smtp.sock is not None

    def connect(self) -> None:
        cfg = self.config
        context = client_context(cfg.verify_certificate)
        stage = "before its greeting"
        try:
            if cfg.security == Security.SSL:
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                    local_hostname=_local_hostname(), timeout=cfg.timeout, context=context
                )
            else:
                smtp = smtplib.SMTP(local_hostname=_local_hostname(), timeout=cfg.timeout)
            # smtplib takes the TLS server name (SNI, hostname check) from
            # _host, which only its constructor sets; we connect separately
            # to keep the greeting.
            smtp._host = cfg.host
            self._smtp = smtp
            code, reply = smtp.connect(cfg.host, cfg.port)
            self.greeting = self._reply_text(code, reply)
            if code != 220:
                raise self._reply_error(code, reply, "the connection")
            stage = "after its greeting"
            self._ehlo()
            if cfg.security == Security.STARTTLS:
                if not smtp.has_extn("starttls"):
                    raise TLSFailed(
                        f"the server does not offer STARTTLS on port {cfg.port}: choose "
                        "SSL/TLS if this port expects TLS right away (usually 465), or "
                        "no encryption only if you trust the network"
                    )
                stage = "during STARTTLS"
                smtp.starttls(context=context)
                self._ehlo()
            if cfg.security != Security.NONE:
                assert isinstance(smtp.sock, ssl.SSLSocket)
                self.tls = describe(smtp.sock, verified=cfg.verify_certificate)
        except BaseException as exc:
            self._drop()
            if isinstance(exc, BackendError):
                raise
            if isinstance(exc, Exception):
                raise self._translate(exc, stage) from exc
            raise

    def _ehlo(self) -> None:
        smtp = self._require()
        code, reply = smtp.ehlo()
        if code != 250:
            # A very old server: HELO works, but nothing beyond plain SMTP does.
            code, reply = smtp.helo()
            if code != 250:
                raise self._reply_error(code, reply, "the greeting (EHLO/HELO)")
            self.capabilities = ()
            self.auth_mechanisms = ()
            return
        lines = reply.decode("utf-8", "replace").splitlines()[1:]
        self.capabilities = tuple(line.strip() for line in lines if line.strip())
        self.auth_mechanisms = tuple(smtp.esmtp_features.get("auth", "").upper().split())

    def login(self) -> None:
        cfg = self.config
        if not cfg.username:
            return  # a relay that accepts mail without a login
        smtp = self._require()
        if not self.auth_mechanisms:
            if cfg.security == Security.NONE:
                hint = "; it may offer it only after STARTTLS: choose STARTTLS or SSL/TLS"
            else:
                hint = "; leave the user name empty if it relays mail without a login"
            raise NotSupported(
                f"the server at {cfg.host}:{cfg.port} offers no authentication on this "
                f"connection{hint}"
            )
        try:
            if _is_ascii(cfg.username) and _is_ascii(cfg.password):
                smtp.login(cfg.username, cfg.password)
            elif "PLAIN" in self.auth_mechanisms:
                self._auth_plain_utf8()
            else:
                raise NotSupported(
                    "the user name or password contains non-ASCII characters, which can "
                    "only be sent with AUTH PLAIN; the server offers "
                    + ", ".join(self.auth_mechanisms)
                )
        except smtplib.SMTPAuthenticationError as exc:
            said = self._reply_text(exc.smtp_code, exc.smtp_error)
            if 400 <= exc.smtp_code < 500:
                raise TemporaryFailure(
                    f"the server could not check the password of user {cfg.username} "
                    f"right now ({said}); try again later"
                ) from None
            raise AuthenticationFailed(
                f"authentication failed for user {cfg.username}: the server said {said}"
            ) from None
        except (smtplib.SMTPServerDisconnected, smtplib.SMTPResponseException) as exc:
            raise self._translate(exc, "during login") from None
        except smtplib.SMTPException:
            # smtplib found no mechanism it can use among those offered.
            raise NotSupported(
                "the server offers only "
                + ", ".join(self.auth_mechanisms)
                + " authentication, none of which this app can use (PLAIN, LOGIN, CRAM-MD5)"
            ) from None
        except BackendError:
            raise
        except Exception as exc:
            raise self._translate(exc, "during login") from None
        self.authenticated = True

    def _auth_plain_utf8(self) -> None:
        # smtplib encodes credentials as ASCII; RFC 4616 PLAIN is UTF-8.
        smtp = self._require()
        token = b"\0" + self.config.username.encode() + b"\0" + self.config.password.encode()
        code, reply = smtp.docmd("AUTH", "PLAIN " + base64.b64encode(token).decode("ascii"))
        if code not in (235, 503):
            raise smtplib.SMTPAuthenticationError(code, reply)

    def close(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is None:
            return
        try:
            if smtp.sock is not None:
                # QUIT is a courtesy: do not let a hung server hold us long.
                smtp.sock.settimeout(min(self.config.timeout, 5.0))
                smtp.quit()
        except Exception:
            pass
        finally:
            try:
                smtp.close()
            except Exception:
                pass

    def _drop(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            try:
                smtp.close()
            except Exception:
                pass

    # --- sending --------------------------------------------------------------

    def send(self, message: bytes, *, sender: str, recipients: Sequence[str]) -> SendResult:
        """Run one MAIL/RCPT/DATA transaction.

        Returns the accepted and refused recipients and the server's reply to
        DATA. Raises when nothing was delivered: every recipient refused, the
        sender refused, the message refused, a 4xx (``TemporaryFailure``) or a
        dropped connection (``ConnectionFailed``). After a refused transaction
        the connection is reset (RSET) and can send the next message.
        """
        smtp = self._require()
        if not recipients:
            raise ProtocolError("the message has no recipients")
        message = _LINE_ENDS.sub(b"\r\n", message)
        options: list[str] = []
        if not all(_is_ascii(address) for address in (sender, *recipients)):
            if not smtp.has_extn("smtputf8"):
                raise NotSupported(
                    "the server does not accept addresses with non-ASCII characters "
                    "(it does not offer SMTPUTF8)"
                )
            options.append("SMTPUTF8")
        if smtp.has_extn("size"):
            options.append(f"SIZE={len(message)}")
        if not message.isascii() and smtp.has_extn("8bitmime"):
            options.append("BODY=8BITMIME")
        try:
            code, reply = smtp.mail(sender, options)
            if code != 250:
                raise self._refused_transaction(code, reply, f"the sender {sender}")
            accepted: list[str] = []
            refused: dict[str, str] = {}
            for recipient in recipients:
                code, reply = smtp.rcpt(recipient)
                if code in (250, 251):
                    accepted.append(recipient)
                elif code == 421:  # the server is closing the connection
                    raise self._refused_transaction(code, reply, f"the recipient {recipient}")
                else:
                    refused[recipient] = self._reply_text(code, reply)
            if not accepted:
                self._reset()
                listing = "; ".join(f"{r} ({why})" for r, why in refused.items())
                error = (
                    TemporaryFailure
                    if all(w.startswith("4") for w in refused.values())
                    else ProtocolError
                )
                raise error(f"the server refused every recipient: {listing}")
            try:
                code, reply = smtp.data(message)
            except smtplib.SMTPDataError as exc:  # the reply to DATA itself was not 354
                code, reply = exc.smtp_code, exc.smtp_error
            if code != 250:
                raise self._refused_transaction(code, reply, "the message")
            return SendResult(
                accepted=tuple(accepted),
                refused=refused,
                reply=self._reply_text(code, reply, last_line=True),
            )
        except BackendError:
            raise
        except Exception as exc:
            raise self._translate(exc, "while sending") from None
        finally:
            if self._smtp is not None:
                self._smtp.command_encoding = "ascii"

    def check_sender(self, sender: str) -> str:
        """Ask whether the server would take mail from ``sender`` (MAIL, then RSET).

        Sends no message. This is how the connection test finds a server that
        requires authentication when none is configured, before any mail.
        """
        smtp = self._require()
        try:
            code, reply = smtp.mail(sender)
            if code != 250:
                raise self._refused_transaction(code, reply, f"the sender {sender}")
            self._reset()
            return self._reply_text(code, reply)
        except BackendError:
            raise
        except Exception as exc:
            raise self._translate(exc, "while checking the sender") from None

    def _refused_transaction(self, code: int, reply: bytes, what: str) -> BackendError:
        self._reset()
        return self._reply_error(code, reply, what)

    def _reset(self) -> None:
        # RSET so the connection can carry the next message. If even that
        # fails the connection is gone and the next send() says so.
        if self._smtp is None or self._smtp.sock is None:
            return
        try:
            self._smtp.rset()
        except Exception:
            self._drop()

    # --- errors ---------------------------------------------------------------

    def _require(self) -> smtplib.SMTP:
        if self._smtp is None:
            raise ConnectionFailed(
                f"not connected to {self.config.describe()} (the connection was closed)"
            )
        return self._smtp

    def _scrub(self, text: str) -> str:
        password = self.config.password
        if password and password in text:
            text = text.replace(password, "********")
        return text

    def _reply_text(self, code: int, reply: bytes | str, *, last_line: bool = False) -> str:
        text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        text = (lines[-1] if last_line else " ".join(lines)) if lines else ""
        return self._scrub(f"{code} {text}".strip())

    def _reply_error(self, code: int, reply: bytes | str, what: str) -> BackendError:
        """A refusing SMTP reply to ``what`` (e.g. "the sender x@y"), explained."""
        said = self._reply_text(code, reply)
        if code == 530 or (code == 550 and "authenticat" in said.lower()):
            if "STARTTLS" in said.upper():
                return ProtocolError(
                    f"the server requires STARTTLS before sending ({said}): choose STARTTLS"
                )
            if not self.authenticated:
                return AuthenticationFailed(
                    f"the server requires authentication: enter a user name and password ({said})"
                )
            return AuthenticationFailed(
                f"the server does not let user {self.config.username} send this ({said})"
            )
        if code == 421:
            self._drop()
            return TemporaryFailure(
                f"the server is closing the connection ({said}); try again later"
            )
        if 400 <= code < 500:
            return TemporaryFailure(
                f"the server temporarily refused {what} ({said}); trying again later may work"
            )
        return ProtocolError(f"the server refused {what}: {said}")

    def _translate(self, exc: Exception, stage: str) -> BackendError:
        """Turn an smtplib, socket or TLS exception into a BackendError."""
        cfg = self.config
        where = f"{cfg.host}:{cfg.port}"
        timed_out = isinstance(exc, TimeoutError) or isinstance(exc.__context__, TimeoutError)
        if timed_out:
            if "handshake" in str(exc):
                return ConnectionFailed(
                    f"{where} did not complete the TLS handshake within {cfg.timeout:g} s "
                    "(timeout): if this port expects STARTTLS or no encryption, choose that"
                )
            if stage == "before its greeting":
                hint = ""
                if cfg.security != Security.SSL:
                    hint = (
                        ": if this port expects TLS right away (SMTPS, usually 465), choose "
                        "SSL/TLS; otherwise the server is overloaded or a firewall holds the "
                        "connection"
                    )
                return ConnectionFailed(
                    f"{where} did not send an SMTP greeting within {cfg.timeout:g} s "
                    f"(timeout){hint}"
                )
            return ConnectionFailed(
                f"{where} did not answer within {cfg.timeout:g} s (timeout) {stage}"
            )
        if isinstance(exc, smtplib.SMTPServerDisconnected):
            return ConnectionFailed(f"{where} closed the connection {stage}")
        if isinstance(exc, smtplib.SMTPResponseException):
            return self._reply_error(exc.smtp_code, exc.smtp_error, stage.removeprefix("during "))
        if isinstance(exc, smtplib.SMTPException):
            return ProtocolError(f"SMTP error {stage} with {where}: {self._scrub(str(exc))}")
        if isinstance(exc, ssl.SSLError):
            if isinstance(exc, ssl.SSLEOFError) or "EOF" in str(exc):
                return TLSFailed(
                    f"{where} closed the connection during the TLS handshake: the port may "
                    "not speak TLS, or the server refused our TLS versions"
                )
            return explain_ssl_error(exc, cfg.host, cfg.port)
        if isinstance(exc, ConnectionRefusedError):
            return ConnectionFailed(
                f"connection refused by {where}: nothing listens on that port "
                "(is the port right, is the server running?)"
            )
        if isinstance(exc, socket.gaierror):
            return ConnectionFailed(
                f"the host name {cfg.host} could not be resolved ({exc.strerror})"
            )
        if isinstance(exc, ConnectionError):
            return ConnectionFailed(
                f"the connection to {where} was lost {stage} ({exc.strerror or exc})"
            )
        if isinstance(exc, OSError):
            return ConnectionFailed(f"could not talk to {where} {stage}: {exc.strerror or exc}")
        if isinstance(exc, UnicodeError):
            return ProtocolError(f"text that SMTP cannot carry {stage}: {exc}")
        return ProtocolError(f"unexpected error {stage} with {where}: {type(exc).__name__}")
