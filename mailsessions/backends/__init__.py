"""Mail backends, one module per protocol, found through a registry.

``get_backend_class("imap")`` returns the class; services never branch on the
protocol themselves.
"""

from __future__ import annotations

from django.utils.module_loading import import_string

from mailsessions.backends.base import Backend

REGISTRY: dict[str, str] = {
    "imap": "mailsessions.backends.imap.IMAPBackend",
    "pop3": "mailsessions.backends.pop3.POP3Backend",
    "ews": "mailsessions.backends.ews.EWSBackend",
    "smtp": "mailsessions.backends.smtp.SMTPBackend",
}


def get_backend_class(protocol: str) -> type[Backend]:
    try:
        path = REGISTRY[protocol]
    except KeyError:
        raise ValueError(f"unknown mail protocol {protocol!r}") from None
    return import_string(path)
