"""Saved sessions for tests, built through the same service the wizard uses."""

from __future__ import annotations

from mailsessions import services
from mailsessions.models import MailSession, Mode, Operation, OperationKind

IN_PASSWORD = "imap-Secret-Pw-7731"
OUT_PASSWORD = "smtp-Secret-Pw-4409"


def make_session(owner, *, name="Support inbox", mode=Mode.READ_SEND, **overrides) -> MailSession:
    incoming = {
        "in_protocol": "imap",
        "in_encryption": "ssl",
        "in_host": "mail.example.test",
        "in_port": None,
        "in_username": "alice@example.test",
        "in_verify_certificate": True,
    }
    outgoing = {
        "out_host": "smtp.example.test",
        "out_port": None,
        "out_encryption": "starttls",
        "out_verify_certificate": True,
        "out_use_different_credentials": mode == Mode.SEND,
        "out_no_auth": False,
        "out_username": "alice@example.test" if mode == Mode.SEND else "",
        "test_mail_to": "bob@example.test",
    }
    for key, value in overrides.items():
        (incoming if key.startswith(("in_", "ews_")) else outgoing)[key] = value
    reads = mode != Mode.SEND
    sends = mode != Mode.READ
    return services.mail_session_save(
        owner=owner,
        name=name,
        mode=mode,
        incoming=incoming if reads else None,
        outgoing=outgoing if sends else None,
        in_password=IN_PASSWORD if reads else "",
        out_password=OUT_PASSWORD if sends and outgoing["out_use_different_credentials"] else "",
    )


def alice_session(owner, dovecot, *, protocol="imap", security="ssl", password=None):
    session = make_session(
        owner,
        mode=Mode.READ,
        name="Alice inbox",
        in_protocol=protocol,
        in_encryption=security,
        in_host="127.0.0.1",
        in_port=dovecot.port_for(protocol, security),
        in_username="alice",
        in_verify_certificate=False,
    )
    session.set_in_password(password if password is not None else dovecot.passwords["alice"])
    session.save()
    return session


def read_operation(session, **params) -> Operation:
    operation = Operation(session=session, name="Read inbox", kind=OperationKind.READ, **params)
    operation.full_clean()
    operation.save()
    return operation
