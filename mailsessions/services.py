"""Business logic: every write to a mail session and every recorded outcome.

Functions are named ``<entity>_<action>``, take keyword arguments only, and
are what views, forms, admin, tasks and commands call.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction

from mailsessions.models import MailSession, Mode

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


@transaction.atomic
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
        if session.out_no_auth or not session.out_has_own_credentials:
            session.out_password_encrypted = ""
        elif out_password:
            session.set_out_password(out_password)
    session.full_clean(exclude=["owner"])
    session.save()
    return session


def mail_session_delete(*, session: MailSession) -> None:
    session.delete()
