"""Sending through Exchange: a read-and-send EWS session of alice sends with
her Exchange account (no SMTP server), against the loopback EWS fake."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from mailsessions import runs, sending
from mailsessions.diagnostics import diagnose_outgoing
from mailsessions.models import Mode, Operation, OperationKind, RunStatus
from mailsessions.policy import TargetPolicy
from tests.factories import make_session

pytestmark = pytest.mark.django_db


def exchange_session(owner, server, **over):
    session = make_session(
        owner,
        mode=Mode.READ_SEND,
        name="Exchange",
        in_protocol="ews",
        in_encryption="ssl",
        in_host="",
        ews_endpoint=server.endpoint,
        ews_auth_type="basic",
        in_username="alice",
        ews_email="alice@example.test",
        out_via_ews=True,
        out_host="",
        out_encryption="",
        test_mail_to="bob@example.test",
        **over,
    )
    session.set_in_password("alice-secret-pw")
    session.save()
    return session


def test_send_mail_goes_through_exchange(alice, ews_mailbox):
    session = exchange_session(alice, ews_mailbox)
    assert session.outgoing_protocol == "ews" and session.server_summary.endswith("via Exchange")
    operation = Operation(
        session=session,
        name="Notify",
        kind=OperationKind.SEND,
        send_to="Bob <bob@example.test>",
        send_bcc="audit@example.test",
        send_subject="Quarterly numbers",
        send_text_body="See attached.\n",
    )
    operation.full_clean()
    operation.save()
    run = sending.operation_send(run=runs.run_start(operation=operation))
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.sent == 1
    [sent] = ews_mailbox.sent
    assert set(sent.recipients) == {"bob@example.test", "audit@example.test"}
    assert b"Subject: Quarterly numbers" in sent.mime
    assert (
        b"audit@example.test" not in sent.mime.split(b"\r\n\r\n", 1)[0]
    )  # Bcc stays off the headers
    assert "CreateItem" in ews_mailbox.requests


def test_test_mail_through_exchange(alice, ews_mailbox):
    session = exchange_session(alice, ews_mailbox)
    diagnosis = diagnose_outgoing(
        session.outgoing_config(),
        protocol="ews",
        send_to="bob@example.test",
        sender=session.sender_address(),
        message=b"Subject: test\r\n\r\nhello\r\n",
        policy=TargetPolicy(),
    )
    assert diagnosis.passed, diagnosis.summary
    assert [s.name for s in diagnosis.stages][-2:] == ["auth", "send"]
    assert (
        ews_mailbox.sent[-1].recipients == ["bob@example.test"]
        or "bob@example.test" in ews_mailbox.sent[-1].recipients
    )


def test_only_exchange_sessions_may_send_through_exchange(alice, ews_mailbox):
    with pytest.raises(ValidationError) as info:
        make_session(alice, mode=Mode.READ_SEND, name="IMAP", out_via_ews=True)
    assert "out_via_ews" in info.value.message_dict
