"""Business logic: every write to a mail session and every recorded outcome.

Functions are named ``<entity>_<action>``, take keyword arguments only, and
are what views, forms, admin, tasks and commands call.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from mailsessions import crypto
from mailsessions.backends.base import Security, ServerConfig
from mailsessions.models import (
    ConnectionTest,
    MailSession,
    Mode,
    TestKind,
    TestOutcome,
    TestStatus,
)

_INCOMING_DEFAULTS: dict[str, Any] = {
    "in_protocol": "",
    "in_encryption": "",
    "in_allow_plaintext": False,
    "in_host": "",
    "in_port": None,
    "in_username": "",
    "in_password_encrypted": "",
    "in_verify_certificate": True,
    "ews_endpoint": "",
    "ews_auth_type": "",
    "ews_email": "",
}
_OUTGOING_DEFAULTS: dict[str, Any] = {
    "out_via_ews": False,
    "out_host": "",
    "out_port": None,
    "out_encryption": "",
    "out_allow_plaintext": False,
    "out_verify_certificate": True,
    "out_use_different_credentials": False,
    "out_no_auth": False,
    "out_username": "",
    "out_password_encrypted": "",
    "out_sender": "",
    "test_mail_to": "",
}


@sensitive_variables("in_password", "out_password")
def mail_session_save(
    *,
    owner,
    name: str,
    mode: str,
    incoming: dict[str, Any] | None,
    outgoing: dict[str, Any] | None,
    in_password: str = "",
    out_password: str = "",
    instance: MailSession | None = None,
) -> MailSession:
    """Create or update a session from validated wizard data.

    A blank password keeps the stored one. Settings of a part the mode no
    longer uses are cleared (a read-only session keeps no SMTP password).
    Raises ``ValidationError`` when the combination breaks a model rule.
    """
    # Not @transaction.atomic: a decorator frame would show the passwords in error reports.
    with transaction.atomic():
        session = instance if instance is not None else MailSession(owner=owner)
        if instance is not None:
            session = MailSession.objects.select_for_update().get(pk=instance.pk)
        session.name = name
        session.mode = mode
        reads = mode in (Mode.READ_SEND, Mode.READ)
        sends = mode in (Mode.READ_SEND, Mode.SEND)

        for field, default in _INCOMING_DEFAULTS.items():
            if not reads:
                setattr(session, field, default)
            elif incoming is not None and field in incoming:
                setattr(session, field, incoming[field])
        for field, default in _OUTGOING_DEFAULTS.items():
            if not sends:
                setattr(session, field, default)
            elif outgoing is not None and field in outgoing:
                setattr(session, field, outgoing[field])

        if reads and incoming is not None and incoming.get("in_port") is None:
            session.in_port = None  # save() fills in the protocol's default
        if sends and outgoing is not None and outgoing.get("out_port") is None:
            session.out_port = None
        if reads and in_password:
            session.set_in_password(in_password)
        if sends:
            if session.out_via_ews or session.out_no_auth or not session.out_has_own_credentials:
                session.out_password_encrypted = ""
            elif out_password:
                session.set_out_password(out_password)
        session.full_clean(exclude=["owner"])
        session.save()
        return session


def mail_session_delete(*, session: MailSession) -> None:
    session.delete()


# --- connection tests -----------------------------------------------------


class RateLimited(Exception):
    pass


def _test_message(*, sender: str, to: str, session_name: str) -> bytes:
    from email.message import EmailMessage
    from email.utils import formatdate, make_msgid

    message = EmailMessage()
    message["Subject"] = f"Mail Sessions test mail ({session_name or 'unsaved session'})"
    message["From"] = sender
    message["To"] = to
    message["Date"] = formatdate(localtime=True)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    message["X-Mail-Sessions-Test"] = "yes"
    message.set_content(
        "This is a test message sent by Mail Sessions to check the outgoing mail "
        f"settings of the session “{session_name or 'unsaved session'}”.\n\n"
        "If you can read it, sending works. No action is needed.\n"
    )
    return message.as_bytes()


@sensitive_variables("config", "payload")
def connection_test_start(
    *,
    owner,
    kind: str,
    protocol: str,
    config: ServerConfig,
    session: MailSession | None = None,
    sender: str = "",
    send_to: str = "",
    session_name: str = "",
) -> ConnectionTest:
    """Record a test and hand it to a worker.

    The server settings, password included, are stored encrypted on the row;
    the task receives only the row's id, so no credential enters the broker.
    Raises RateLimited when the user started too many tests this minute.
    """
    limit = settings.MAILSESSIONS_TEST_RATE_PER_MINUTE
    recent = ConnectionTest.objects.filter(
        owner=owner, created__gte=timezone.now() - dt.timedelta(minutes=1)
    ).count()
    if recent >= limit:
        raise RateLimited(
            f"You started {recent} tests in the last minute (the limit is {limit}); "
            "wait a moment and try again."
        )
    payload = {
        "protocol": protocol,
        "config": {**dataclasses.asdict(config), "security": str(config.security)},
        "sender": sender,
        "send_to": send_to,
        "session_name": session_name,
    }
    test = ConnectionTest.objects.create(
        owner=owner,
        session=session,
        kind=kind,
        target=f"{protocol.upper()} {config.host or config.ews_endpoint}:{config.port}",
        config_encrypted=crypto.encrypt(json.dumps(payload)),
    )
    from mailsessions import tasks

    test_id = str(test.pk)
    transaction.on_commit(lambda: tasks.run_connection_test.delay(test_id))
    return test


@sensitive_variables("payload")
def connection_test_run(*, test_id) -> ConnectionTest:
    """Run a recorded test, saving each stage as it completes.

    The encrypted settings are wiped when the test ends, whatever happens.
    """
    test = ConnectionTest.objects.get(pk=test_id)
    if test.done:
        return test
    if not test.config_encrypted:
        ConnectionTest.objects.filter(pk=test.pk).update(
            status=TestStatus.FAILED,
            summary="The test's settings expired before a worker ran it.",
            finished=timezone.now(),
        )
        test.refresh_from_db()
        return test
    started = timezone.now()
    ConnectionTest.objects.filter(pk=test.pk).update(status=TestStatus.RUNNING, started=started)
    try:
        payload = json.loads(crypto.decrypt(test.config_encrypted, ttl=CONNECTION_TEST_TTL))
    except crypto.DecryptionError as exc:
        payload = None
        error = str(exc)

    def progress(diagnosis) -> None:
        ConnectionTest.objects.filter(pk=test.pk).update(
            stages=[s.as_dict() for s in diagnosis.stages]
        )

    try:
        if payload is None:
            stages, passed, summary = [], False, error
        else:
            diagnosis = _diagnose(test, payload, progress)
            stages = [s.as_dict() for s in diagnosis.stages]
            passed, summary = diagnosis.passed, diagnosis.summary
    except BaseException:
        # A time limit or a crash: never leave the test "running" or the
        # encrypted settings behind.
        ConnectionTest.objects.filter(pk=test.pk).update(
            status=TestStatus.FAILED,
            summary="The test did not finish (time limit or worker failure).",
            finished=timezone.now(),
            config_encrypted="",
        )
        raise
    finished = timezone.now()
    status = TestStatus.PASSED if passed else TestStatus.FAILED
    ConnectionTest.objects.filter(pk=test.pk).update(
        status=status, stages=stages, summary=summary[:500], finished=finished, config_encrypted=""
    )
    if test.session_id:
        mail_session_record_test(
            session_id=test.session_id,
            passed=passed,
            summary=f"{test.get_kind_display()}: {summary}",
            stages=stages,
            at=finished,
        )
    test.refresh_from_db()
    return test


def mail_session_record_test(
    *, session_id: int, passed: bool, summary: str, stages: list[dict], at=None
) -> None:
    """Store the latest connection test's outcome on the session."""
    MailSession.objects.filter(pk=session_id).update(
        last_test_at=at or timezone.now(),
        last_test_outcome=TestOutcome.PASSED if passed else TestOutcome.FAILED,
        last_test_summary=summary[:500],
        last_test_stages=stages,
    )


@sensitive_variables("payload", "config")
def _diagnose(test: ConnectionTest, payload: dict, progress):
    from mailsessions import diagnostics

    config = ServerConfig(
        **{**payload["config"], "security": Security(payload["config"]["security"])}
    )
    if test.kind == TestKind.INCOMING:
        return diagnostics.diagnose_incoming(payload["protocol"], config, on_stage=progress)
    send_to = payload["send_to"] if test.kind == TestKind.TEST_MAIL else ""
    message = (
        _test_message(sender=payload["sender"], to=send_to, session_name=payload["session_name"])
        if send_to
        else b""
    )
    return diagnostics.diagnose_outgoing(
        config,
        protocol=payload["protocol"],
        send_to=send_to,
        sender=payload["sender"],
        message=message,
        on_stage=progress,
    )


# An unsaved wizard's settings are usable by a worker for this long.
CONNECTION_TEST_TTL = 15 * 60
