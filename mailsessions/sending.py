"""Send Mail: build the messages of a Send operation and submit them over SMTP.

The task layer calls :func:`mailsessions.runs.run_start` and later
:func:`operation_send` in the worker.
``operation_send`` records every outcome on the :class:`~mailsessions.models.Run`
and never raises a :class:`~mailsessions.backends.base.BackendError`; whether
retrying could help is returned as ``run.retryable`` (a plain attribute).

Order of things:

1. check the mode and every header field (CR/LF/NUL, address syntax) before
   any connection: data can reach an Operation through the admin or the API
   without ``full_clean()``;
2. plan the messages (one, or one per To address with ``send_individually``);
3. open ONE SMTP connection and send every message on it. MIME is built by
   ``email.message.EmailMessage``, never by hand: the body and the common
   headers once per run, per message only To, Date and Message-ID (folded by
   the same ``email`` policy).

Counts: ``sent`` = messages the server accepted (for at least one recipient),
``failed`` = messages not sent. Recipients the server refused while others of
the same message were accepted are listed in ``error`` ("refused: x@y (550 …)")
and make the run ``partly_failed``.
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from email import policy as email_policy
from email.headerregistry import Address
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.utils import format_datetime, getaddresses, make_msgid

from django.core.exceptions import ValidationError
from django.utils import timezone

from mailsessions import policy
from mailsessions.backends import get_backend_class
from mailsessions.backends.base import BackendError, OutgoingBackend
from mailsessions.diagnostics import endpoint
from mailsessions.models import (
    Operation,
    OperationAttachment,
    OperationKind,
    ReferenceMode,
    Run,
    RunStatus,
    StoredMessage,
)
from mailsessions.runs import run_recorded
from mailsessions.validators import parse_address_list

__all__ = ["operation_send"]

_HEADER_BAD = re.compile(r"[\r\n\x00]")
_REPLY_PREFIX = re.compile(r"^\s*(re|aw|sv)\s*:", re.IGNORECASE)
_FORWARD_PREFIX = re.compile(r"^\s*(fwd?|wg)\s*:", re.IGNORECASE)

# The header fields a person fills in, with the names the form shows.
ADDRESS_FIELDS = (
    ("send_to", "To"),
    ("send_cc", "Cc"),
    ("send_bcc", "Bcc"),
    ("send_reply_to", "Reply-To"),
)


class InvalidMessage(BackendError):
    """The operation's own data cannot become a safe message (never retried)."""


@dataclass
class _Tally:
    sent: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    retryable: bool = False


@dataclass(frozen=True)
class _Plan:
    """Everything that is the same for every message of the run."""

    sender: str
    to: list[tuple[str, str]]
    cc: list[tuple[str, str]]
    bcc: list[tuple[str, str]]
    reply_to: list[tuple[str, str]]
    subject: str
    text_body: str
    html_body: str
    in_reply_to: str = ""
    references: str = ""
    forward_raw: bytes | None = None
    attachments: tuple[tuple[str, str, bytes], ...] = ()  # (filename, content type, data)

    def batches(self, individually: bool) -> list[list[tuple[str, str]]]:
        """The To list of each message to send."""
        if individually:
            return [[address] for address in self.to]
        return [self.to]


# --- public API -------------------------------------------------------------------


def operation_send(*, run: Run) -> Run:
    """Execute the Send Mail operation of ``run`` and record the outcome on it.

    Returns the run reloaded from the database with an extra attribute
    ``retryable`` (bool): True only when the run failed without sending
    anything for a reason that may pass (timeout, dropped connection, 4xx).

    Status: ``succeeded`` when every message reached every recipient,
    ``partly_failed`` when some messages or recipients were refused while
    others were sent, ``failed`` when nothing was sent; ``error`` says why.
    """
    tally = _Tally()
    clock = time.monotonic()

    def finish(error: str) -> Run:
        if error:
            tally.errors.insert(0, error)
        return _finish(run, tally, clock)

    run, retryable = run_recorded(
        run=run,
        kind=OperationKind.SEND,
        body=lambda: _send(run.operation, _plan(run.operation), tally),
        finish=finish,
    )
    # A run-ending error decides; otherwise the per-message failures did.
    if retryable is None:
        retryable = tally.retryable
    run.retryable = retryable and run.status == RunStatus.FAILED and run.sent == 0
    return run


# --- the flow ---------------------------------------------------------------------


def _finish(run: Run, tally: _Tally, clock: float) -> Run:
    if tally.sent and (tally.failed or tally.errors):
        status = RunStatus.PARTLY_FAILED
    elif tally.sent:
        status = RunStatus.SUCCEEDED
    else:
        status = RunStatus.FAILED
    reference = run.operation.reference_message_id
    if tally.sent and reference is not None and run.operation.reference_mode != ReferenceMode.NONE:
        run.touched.add(reference)
    Run.objects.filter(pk=run.pk).update(
        status=status,
        finished=timezone.now(),
        duration_ms=int((time.monotonic() - clock) * 1000),
        sent=tally.sent,
        failed=tally.failed,
        error="\n".join(tally.errors).strip(),
    )
    run.refresh_from_db()
    return run


def _send(operation: Operation, plan: _Plan, tally: _Tally) -> None:
    session = operation.session
    batches = plan.batches(operation.send_individually)
    config = session.outgoing_config()
    host, port, _ = endpoint(session.outgoing_protocol, config)
    policy.ensure_allowed(host, port)
    builder = _Builder(plan)
    try:
        with get_backend_class(session.outgoing_protocol)(config) as backend:
            assert isinstance(backend, OutgoingBackend)
            for index, to in enumerate(batches):
                if not getattr(backend, "connected", True):
                    # The connection is gone: what is left was not sent.
                    tally.failed += len(batches) - index
                    break
                _send_one(backend, plan, builder, to, tally)
    except BackendError:
        # Opening failed (refused connection, TLS, bad password): nothing went out.
        tally.failed += len(batches) - tally.sent - tally.failed
        raise


def _send_one(
    backend: OutgoingBackend,
    plan: _Plan,
    builder: _Builder,
    to: list[tuple[str, str]],
    tally: _Tally,
) -> None:
    recipients = list(dict.fromkeys(_ascii_address(a) for _n, a in (*to, *plan.cc, *plan.bcc)))
    message = builder.build(to)
    try:
        result = backend.send(message, sender=_ascii_address(plan.sender), recipients=recipients)
    except BackendError as exc:
        tally.failed += 1
        shown = ", ".join(a for _n, a in to) or "the Cc/Bcc recipients"
        tally.errors.append(f"not sent to {shown}: {exc.message}")
        # Retry only helps if every failure so far was temporary.
        tally.retryable = exc.retryable and (tally.retryable or tally.failed == 1)
        return
    tally.sent += 1
    for address, reason in result.refused.items():
        tally.errors.append(f"refused: {address} ({reason})")


# --- planning and checking --------------------------------------------------------


def _check_header(label: str, value: str) -> None:
    if value and _HEADER_BAD.search(value):
        raise InvalidMessage(
            f"The {label} field contains a line break or NUL character; "
            "the message was not sent (header injection is refused)."
        )


def _addresses(label: str, value: str) -> list[tuple[str, str]]:
    _check_header(label, value)
    try:
        return parse_address_list(value)
    except ValidationError as exc:
        raise InvalidMessage(f"{label}: {' '.join(exc.messages)}") from None


def _plan(operation: Operation) -> _Plan:
    """Check every header field and gather what the messages are made of."""
    session = operation.session
    sender = session.sender_address()
    _check_header("sender address", sender)
    if not sender or "@" not in sender:
        raise InvalidMessage(
            f"“{session.name}” has no sender address: enter one in the outgoing settings."
        )
    lists = {name: _addresses(label, getattr(operation, name)) for name, label in ADDRESS_FIELDS}
    _check_header("Subject", operation.send_subject)
    attachments = []
    for attachment in operation.attachments.all():
        _check_header(f"attachment name “{attachment.filename[:60]!r}”", attachment.filename)
        _check_header(f"content type of “{attachment.filename}”", attachment.content_type)
        attachments.append(attachment)

    subject = operation.send_subject
    text_body = operation.send_text_body
    html_body = operation.send_html_body
    to = lists["send_to"]
    extra: dict = {}
    mode = operation.reference_mode
    if mode != ReferenceMode.NONE:
        original = operation.reference_message
        if original is None:
            raise InvalidMessage(
                "The stored message to reply to or forward no longer exists: choose another."
            )
        raw = _read_raw(original)
        headers = BytesParser(policy=email_policy.compat32).parsebytes(raw, headersonly=True)
        original_subject = _one_line(original.subject)
        if mode == ReferenceMode.REPLY:
            subject = _prefixed(subject or original_subject, "Re: ", _REPLY_PREFIX)
            message_id = _one_line(original.message_id or str(headers.get("Message-ID", "")))
            if message_id:
                earlier = _one_line(str(headers.get("References", "")))
                extra["in_reply_to"] = message_id
                extra["references"] = " ".join(filter(None, [earlier, message_id]))
            if not to:
                to = _reply_target(headers, original)
            text_body, html_body = _quote(original, text_body, html_body)
        else:
            subject = _prefixed(subject or original_subject, "Fwd: ", _FORWARD_PREFIX)
            extra["forward_raw"] = raw
    if not (to or lists["send_cc"] or lists["send_bcc"]):
        raise InvalidMessage("The message has no recipients: enter at least one To address.")
    if operation.send_individually and not to:
        raise InvalidMessage("“One message per recipient” needs To addresses.")
    return _Plan(
        sender=sender,
        to=to,
        cc=lists["send_cc"],
        bcc=lists["send_bcc"],
        reply_to=lists["send_reply_to"],
        subject=subject,
        text_body=text_body,
        html_body=html_body,
        attachments=tuple(_load(a) for a in attachments),
        **extra,
    )


def _one_line(value: str) -> str:
    # Values from received mail are not ours to refuse; fold them to one line.
    return " ".join(_HEADER_BAD.sub(" ", value or "").split())


def _prefixed(subject: str, prefix: str, already: re.Pattern) -> str:
    return subject if already.match(subject) else f"{prefix}{subject}"


def _read_raw(original: StoredMessage) -> bytes:
    if not original.raw:
        raise InvalidMessage(
            f"The stored message “{original}” has no raw copy, so it cannot be forwarded "
            "or replied to."
        )
    with original.raw.open("rb") as f:
        return f.read()


def _reply_target(headers: Message, original: StoredMessage) -> list[tuple[str, str]]:
    for name in ("Reply-To", "From"):
        values = [str(v) for v in headers.get_all(name, [])]
        found = [(n, a) for n, a in getaddresses(values) if a and "@" in a]
        if found:
            return [(_one_line(n), _one_line(a)) for n, a in found]
    found = [(n, a) for n, a in getaddresses([original.from_addr]) if a and "@" in a]
    if not found:
        raise InvalidMessage(
            "The stored message has no Reply-To or From address to reply to: enter a To address."
        )
    return found


def _quote(original: StoredMessage, text_body: str, html_body: str) -> tuple[str, str]:
    when = original.date.strftime("%Y-%m-%d %H:%M") if original.date else "an unknown date"
    intro = f"On {when}, {original.from_addr or 'the sender'} wrote:"
    quoted = "\n".join(f"> {line}" if line else ">" for line in original.text_body.splitlines())
    text = f"{text_body.rstrip()}\n\n{intro}\n{quoted}\n".lstrip("\n")
    if html_body:
        html_body = (
            f"{html_body}\n<p>{html.escape(intro)}</p>\n<blockquote>"
            f"{html.escape(original.text_body).replace(chr(10), '<br>')}</blockquote>"
        )
    return text, html_body


def _load(attachment: OperationAttachment) -> tuple[str, str, bytes]:
    # Read once per run, not once per message: send_individually reuses it.
    with attachment.file.open("rb") as f:
        data = f.read()
    return attachment.filename, attachment.content_type or "application/octet-stream", data


# --- building ---------------------------------------------------------------------


def _ascii_address(address: str) -> str:
    """IDNA-encode the domain, so only a non-ASCII local part needs SMTPUTF8."""
    local, _, domain = address.rpartition("@")
    try:
        return f"{local}@{domain.encode('idna').decode('ascii')}"
    except UnicodeError:
        return address


def _header_addresses(pairs: Iterable[tuple[str, str]]) -> list[Address]:
    result = []
    for name, address in pairs:
        local, _, domain = _ascii_address(address).rpartition("@")
        result.append(Address(display_name=name, username=local, domain=domain))
    return result


def _cte(text: str) -> str | None:
    # 8bit would need the server's 8BITMIME (and survive fewer relays):
    # quoted-printable keeps the message 7-bit and the text readable.
    return None if text.isascii() else "quoted-printable"


class _Builder:
    """Builds the messages of one run.

    What every message shares is built once per policy (the MIME body with its
    attachments, From, Cc, Reply-To, Subject, threading headers) by
    ``EmailMessage``; per message only To, Date and Message-ID are folded, by
    the same policy (``email`` encodes non-ASCII names), and joined in the
    usual header order. Building the whole message each time was two thirds
    of the run's time against a local server.
    """

    def __init__(self, plan: _Plan) -> None:
        self.plan = plan
        self.domain = _ascii_address(plan.sender).rpartition("@")[2]
        common = [plan.sender, *(a for _n, a in (*plan.cc, *plan.reply_to))]
        self.common_utf8 = not all(_ascii_address(a).isascii() for a in common)
        self._parts: dict[bool, tuple[bytes, bytes, bytes]] = {}
        self._date: tuple[int, dict[bool, bytes]] = (-1, {})

    def build(self, to: list[tuple[str, str]]) -> bytes:
        """One RFC 5322 message to ``to`` (the envelope adds Cc and Bcc)."""
        utf8 = self.common_utf8 or not all(_ascii_address(a).isascii() for _n, a in to)
        msg_policy = email_policy.SMTPUTF8 if utf8 else email_policy.SMTP
        lead, middle, rest = self._common(utf8, msg_policy)
        message_id = make_msgid(domain=self.domain)
        return b"".join(
            (
                lead,
                _fold_to(msg_policy, to) if to else b"",
                middle,
                self._folded_date(utf8, msg_policy),
                _fold_plain(msg_policy, "Message-ID", message_id),
                rest,
            )
        )

    def _folded_date(self, utf8: bool, msg_policy: email_policy.EmailPolicy) -> bytes:
        # The Date header has one-second resolution: fold it once per second.
        now = timezone.now().replace(microsecond=0)
        second = int(now.timestamp())
        if self._date[0] != second:
            self._date = (second, {})
        folded = self._date[1]
        if utf8 not in folded:
            folded[utf8] = _fold(msg_policy, "Date", format_datetime(now))
        return folded[utf8]

    def _common(
        self, utf8: bool, msg_policy: email_policy.EmailPolicy
    ) -> tuple[bytes, bytes, bytes]:
        """(From, Cc + Reply-To + Subject, threading + MIME headers + body), folded."""
        if utf8 in self._parts:
            return self._parts[utf8]
        plan = self.plan
        lead = _fold(msg_policy, "From", _header_addresses([("", plan.sender)]))
        middle = b""
        if plan.cc:
            middle += _fold(msg_policy, "Cc", _header_addresses(plan.cc))
        if plan.reply_to:
            middle += _fold(msg_policy, "Reply-To", _header_addresses(plan.reply_to))
        # Bcc stays in the envelope only.
        middle += _fold(msg_policy, "Subject", plan.subject)
        body = EmailMessage(policy=msg_policy)
        if plan.in_reply_to:
            body["In-Reply-To"] = plan.in_reply_to
            body["References"] = plan.references
        body.set_content(plan.text_body or "", cte=_cte(plan.text_body))
        if plan.html_body:
            body.add_alternative(plan.html_body, subtype="html", cte=_cte(plan.html_body))
        for filename, content_type, data in plan.attachments:
            maintype, _, subtype = content_type.partition("/")
            if maintype in ("", "message", "multipart") or not subtype:
                maintype, subtype = "application", "octet-stream"
            body.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
        if plan.forward_raw is not None:
            original = BytesParser(policy=email_policy.compat32).parsebytes(plan.forward_raw)
            body.add_attachment(original, subtype="rfc822", disposition="attachment")
        # Serialized once, multipart boundaries included; the messages of the
        # run differ only in the header fields put before these.
        rest = body.as_bytes()
        self._parts[utf8] = (lead, middle, rest)
        return self._parts[utf8]


def _fold(msg_policy: email_policy.EmailPolicy, name: str, value: object) -> bytes:
    """One header field as ``EmailMessage.as_bytes`` writes it (encoded, folded)."""
    return msg_policy.fold_binary(*msg_policy.header_store_parse(name, value))


def _fold_to(msg_policy: email_policy.EmailPolicy, to: list[tuple[str, str]]) -> bytes:
    addresses = _header_addresses(to)
    text = ", ".join(str(address) for address in addresses)  # quoted where needed
    if text.isascii():
        return _fold_plain(msg_policy, "To", text)
    return _fold(msg_policy, "To", addresses)


def _fold_plain(msg_policy: email_policy.EmailPolicy, name: str, value: str) -> bytes:
    """A field built by ``email`` itself (``str(Address)``, ``make_msgid``).

    An ASCII value that fits on a line needs no encoding: the policy writes it
    as it is (its rule for string values) and refolds a long one through the
    header registry; only a non-ASCII value is parsed and encoded. Parsing
    every per-message header back was most of the build time.
    """
    if value.isascii():
        return msg_policy.fold_binary(name, value)
    return _fold(msg_policy, name, value)
