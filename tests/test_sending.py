"""Send Mail against real aiosmtpd servers on loopback.

alice owns send-only sessions pointing at the test servers: ``smtp_noauth``
(a LAN relay, no login), ``smtp_auth_starttls`` and ``smtp_ssl`` (alice logs
in). Every test clears the server it uses, runs one operation and compares
what arrived (envelope and bytes, parsed back) with what was asked.
"""

from __future__ import annotations

import datetime as dt
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

import pytest
from django.core.files.base import ContentFile

from mailsessions import runs, sending
from mailsessions.models import (
    Mode,
    Operation,
    OperationAttachment,
    OperationKind,
    ReferenceMode,
    Run,
    RunStatus,
    StoredMessage,
)
from tests.factories import make_session
from tests.servers.smtp import USERS

pytestmark = pytest.mark.django_db

SENDER = "alice@example.test"


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path) -> Path:
    root = tmp_path / "media"
    settings.MEDIA_ROOT = root
    return root


def smtp_session(owner, server, *, password=None, name="Alice outbox"):
    """A send-only session on ``server``: alice's login where it wants one."""
    common = {
        "out_host": server.host,
        "out_port": server.port,
        "out_encryption": str(server.security),
        "out_verify_certificate": False,
        "out_sender": SENDER,
    }
    if server.auth_required:
        session = make_session(owner, mode=Mode.SEND, name=name, out_username="alice", **common)
        session.set_out_password(password if password is not None else USERS["alice"])
        session.save()
        return session
    return make_session(
        owner,
        mode=Mode.SEND,
        name=name,
        out_allow_plaintext=True,
        out_use_different_credentials=False,
        out_no_auth=True,
        out_username="alice",
        **common,
    )


def send_operation(session, *, clean=True, **params) -> Operation:
    operation = Operation(session=session, name="Send", kind=OperationKind.SEND, **params)
    if clean:
        operation.full_clean()
    operation.save()
    return operation


def run_send(operation) -> Run:
    return sending.operation_send(run=runs.run_start(operation=operation, trigger="manual"))


def parse(raw: bytes) -> EmailMessage:
    # The wire has CRLF line ends; the parser would keep them inside bodies.
    return BytesParser(policy=policy.default).parsebytes(raw.replace(b"\r\n", b"\n"))


@pytest.fixture
def relay(smtp_noauth):
    smtp_noauth.clear()
    return smtp_noauth


def stored_message(session, raw: bytes, **fields) -> StoredMessage:
    message = StoredMessage(session=session, folder="INBOX", server_id="1", **fields)
    message.raw.save("1.eml", ContentFile(raw), save=False)
    message.save()
    return message


def original_raw() -> bytes:
    original = EmailMessage()
    original["From"] = "Bob Builder <bob@example.test>"
    original["Reply-To"] = "Bob's desk <desk@example.test>"
    original["To"] = SENDER
    original["Subject"] = "Quarterly numbers"
    original["Message-ID"] = "<q3@example.test>"
    original["References"] = "<q2@example.test>"
    original["Date"] = "Tue, 01 Jul 2025 10:00:00 +0000"
    original.set_content("Here are the numbers.\nSee you.\n")
    return original.as_bytes(policy=policy.SMTP)


# --- what arrives ----------------------------------------------------------------


def test_headers_bodies_and_attachments_arrive_as_given(alice, relay):
    session = smtp_session(alice, relay)
    operation = send_operation(
        session,
        send_to="Jürgen Groß <juergen@example.test>, carol@example.test",
        send_cc="Zoë 山田 <zoe@example.test>",
        send_bcc="hidden@example.test",
        send_reply_to="Support <support@example.test>",
        send_subject="Grüße – status ✓",
        send_text_body="Plain text body, ünïcödé.\n",
        send_html_body="<p>HTML <b>body</b> ✓</p>",
    )
    pdf = b"%PDF-1.4\n" + bytes(range(256)) * 4
    attachment = OperationAttachment(
        operation=operation, filename="Bericht ä.pdf", content_type="application/pdf", size=0
    )
    attachment.file.save("report.pdf", ContentFile(pdf), save=False)
    attachment.size = len(pdf)
    attachment.save()

    run = run_send(operation)

    assert run.status == RunStatus.SUCCEEDED, run.error
    assert (run.sent, run.failed, run.error, run.retryable) == (1, 0, "", False)
    [received] = relay.wait_for(1)
    assert received.mail_from == SENDER
    assert set(received.rcpt_tos) == {
        "juergen@example.test",
        "carol@example.test",
        "zoe@example.test",
        "hidden@example.test",
    }
    assert received.content.isascii()  # non-ASCII names and text were encoded
    message = parse(received.content)
    assert message["From"] == SENDER
    assert [(a.display_name, a.addr_spec) for a in message["To"].addresses] == [
        ("Jürgen Groß", "juergen@example.test"),
        ("", "carol@example.test"),
    ]
    assert [(a.display_name, a.addr_spec) for a in message["Cc"].addresses] == [
        ("Zoë 山田", "zoe@example.test")
    ]
    assert message["Reply-To"].addresses[0].addr_spec == "support@example.test"
    assert message["Bcc"] is None and b"hidden@" not in received.content
    assert message["Subject"] == "Grüße – status ✓"
    assert message["Date"].datetime is not None
    assert message["Message-ID"].endswith("@example.test>")
    assert message.get_body(("plain",)).get_content() == "Plain text body, ünïcödé.\n"
    assert message.get_body(("html",)).get_content().strip() == "<p>HTML <b>body</b> ✓</p>"
    [part] = list(message.iter_attachments())
    assert part.get_filename() == "Bericht ä.pdf"
    assert part.get_content_type() == "application/pdf"
    assert part.get_content() == pdf


def test_two_hundred_messages_share_one_connection(alice, relay):
    addresses = [f"user{n}@example.test" for n in range(200)]
    operation = send_operation(
        smtp_session(alice, relay),
        send_to=", ".join(addresses),
        send_cc="boss@example.test",
        send_individually=True,
        send_subject="One each",
        send_text_body="Hello.\n",
    )

    run = run_send(operation)

    assert run.status == RunStatus.SUCCEEDED, run.error
    assert (run.sent, run.failed) == (200, 0)
    received = relay.wait_for(200)
    assert relay.connections == 1
    assert {m.connection_id for m in received} == {1}
    assert [m.rcpt_tos for m in received] == [(a, "boss@example.test") for a in addresses]
    # Each message names only its own To address.
    assert [parse(m.content)["To"] for m in received] == addresses
    assert len({parse(m.content)["Message-ID"] for m in received}) == 200


@pytest.mark.parametrize(
    "field, value, named",
    [
        ("send_subject", "Subject\r\nBcc: evil@x.test", "Subject"),
        ("send_to", "ok@example.test\r\nBcc: evil@x.test", "To"),
        ("send_cc", "Nice\nName <cc@example.test>", "Cc"),
        ("send_reply_to", "Evil\x00 <r@example.test>", "Reply-To"),
        ("send_bcc", "b@example.test\rX-Injected: yes", "Bcc"),
    ],
)
def test_header_injection_is_refused_before_connecting(alice, relay, field, value, named):
    params = {"send_to": "bob@example.test", "send_subject": "Hi", field: value}
    # As if saved through the admin or the API, without the model's validators.
    operation = send_operation(smtp_session(alice, relay), clean=False, **params)

    run = run_send(operation)

    assert run.status == RunStatus.FAILED
    assert f"The {named} field contains a line break" in run.error
    assert (run.sent, run.retryable) == (0, False)
    assert relay.connections == 0 and relay.messages == []


def test_refused_recipient_is_named_while_the_others_get_the_mail(alice, relay):
    operation = send_operation(
        smtp_session(alice, relay),
        send_to="bob@example.test, reject-me@example.test, carol@example.test",
        send_subject="Partly",
        send_text_body="Hi\n",
    )

    run = run_send(operation)

    assert run.status == RunStatus.PARTLY_FAILED
    assert run.sent == 1
    assert "refused: reject-me@example.test (550" in run.error
    assert run.retryable is False
    [received] = relay.wait_for(1)
    assert received.rcpt_tos == ("bob@example.test", "carol@example.test")


def test_individual_messages_one_refused(alice, relay):
    operation = send_operation(
        smtp_session(alice, relay),
        send_to="bob@example.test, reject@example.test, carol@example.test",
        send_individually=True,
        send_subject="Each",
        send_text_body="Hi\n",
    )

    run = run_send(operation)

    assert run.status == RunStatus.PARTLY_FAILED
    assert (run.sent, run.failed) == (2, 1)
    assert "reject@example.test" in run.error and "550" in run.error
    assert [m.rcpt_tos for m in relay.wait_for(2)] == [
        ("bob@example.test",),
        ("carol@example.test",),
    ]
    assert relay.connections == 1


def test_every_recipient_temporarily_refused_is_retryable(alice, relay):
    operation = send_operation(
        smtp_session(alice, relay), send_to="tempfail@example.test", send_subject="Later"
    )

    run = run_send(operation)

    assert run.status == RunStatus.FAILED
    assert (run.sent, run.failed) == (0, 1)
    assert "451" in run.error
    assert run.retryable is True


# --- reply and forward -------------------------------------------------------------


def test_reply_threads_quotes_and_answers_the_reply_to(alice, relay):
    session = smtp_session(alice, relay)
    original = stored_message(
        session,
        original_raw(),
        message_id="<q3@example.test>",
        from_addr="Bob Builder <bob@example.test>",
        subject="Quarterly numbers",
        text_body="Here are the numbers.\nSee you.\n",
        date=dt.datetime(2025, 7, 1, 10, 0, tzinfo=dt.UTC),
    )
    # No To: the reply goes to the original's Reply-To (the model's clean()
    # wants a recipient, so this is the admin/API path).
    operation = send_operation(
        session,
        clean=False,
        reference_mode=ReferenceMode.REPLY,
        reference_message=original,
        send_text_body="Thanks, looks good.",
    )

    run = run_send(operation)

    assert run.status == RunStatus.SUCCEEDED, run.error
    [received] = relay.wait_for(1)
    assert received.rcpt_tos == ("desk@example.test",)
    message = parse(received.content)
    assert message["Subject"] == "Re: Quarterly numbers"
    assert message["In-Reply-To"] == "<q3@example.test>"
    assert message["References"] == "<q2@example.test> <q3@example.test>"
    body = message.get_body(("plain",)).get_content()
    assert body.startswith("Thanks, looks good.\n")
    assert "> Here are the numbers.\n> See you." in body


def test_reply_keeps_an_existing_prefix_and_an_explicit_to(alice, relay):
    session = smtp_session(alice, relay)
    original = stored_message(
        session, original_raw(), message_id="<q3@example.test>", subject="RE: Quarterly numbers"
    )
    operation = send_operation(
        session,
        send_to="carol@example.test",
        reference_mode=ReferenceMode.REPLY,
        reference_message=original,
    )

    run = run_send(operation)

    assert run.status == RunStatus.SUCCEEDED, run.error
    [received] = relay.wait_for(1)
    assert received.rcpt_tos == ("carol@example.test",)
    assert parse(received.content)["Subject"] == "RE: Quarterly numbers"


def test_forward_attaches_the_original_as_rfc822(alice, relay):
    session = smtp_session(alice, relay)
    raw = original_raw()
    original = stored_message(session, raw, subject="Quarterly numbers")
    operation = send_operation(
        session,
        send_to="carol@example.test",
        reference_mode=ReferenceMode.FORWARD,
        reference_message=original,
        send_text_body="FYI",
    )

    run = run_send(operation)

    assert run.status == RunStatus.SUCCEEDED, run.error
    [received] = relay.wait_for(1)
    assert raw in received.content  # the original travels byte for byte
    message = parse(received.content)
    assert message["Subject"] == "Fwd: Quarterly numbers"
    assert message["In-Reply-To"] is None
    [part] = list(message.iter_attachments())
    assert part.get_content_type() == "message/rfc822"
    inner = part.get_content()
    assert inner["Message-ID"] == "<q3@example.test>"
    assert inner["Subject"] == "Quarterly numbers"
    assert inner.get_body(("plain",)).get_content() == "Here are the numbers.\nSee you.\n"


# --- TLS, login, mode ----------------------------------------------------------------


@pytest.mark.parametrize("server_fixture", ["smtp_auth_starttls", "smtp_ssl"])
def test_tls_sessions_with_login_send(alice, request, server_fixture):
    server = request.getfixturevalue(server_fixture)
    server.clear()
    operation = send_operation(
        smtp_session(alice, server), send_to="bob@example.test", send_subject="Over TLS"
    )

    run = run_send(operation)

    assert run.status == RunStatus.SUCCEEDED, run.error
    [received] = server.wait_for(1)
    assert received.tls and received.auth_user == "alice"
    assert parse(received.content)["Subject"] == "Over TLS"


def test_wrong_password_fails_without_leaking_it(alice, smtp_auth_starttls):
    smtp_auth_starttls.clear()
    wrong = "Wrong-Pass-98765"
    operation = send_operation(
        smtp_session(alice, smtp_auth_starttls, password=wrong),
        send_to="bob@example.test",
        send_subject="Never",
    )

    run = run_send(operation)

    assert run.status == RunStatus.FAILED
    assert "authentication failed" in run.error
    assert wrong not in run.error
    assert (run.sent, run.failed, run.retryable) == (0, 1, False)
    assert smtp_auth_starttls.messages == []


def test_read_only_session_cannot_send(alice, relay):
    session = make_session(alice, mode=Mode.READ, name="Reader")
    operation = send_operation(session, clean=False, send_to="bob@example.test", send_subject="x")

    run = run_send(operation)

    assert run.status == RunStatus.FAILED
    assert "read-only session (Read mails from inbox)" in run.error
    assert run.retryable is False
    assert relay.connections == 0
