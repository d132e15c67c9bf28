"""Encrypting credentials at rest: the only module that touches the keys.

``settings.MAILSESSIONS_ENCRYPTION_KEYS`` lists Fernet keys, newest first.
The first key encrypts; every key decrypts, so a new key can be put in front,
``manage.py rotatekeys`` re-encrypts everything under it, and only then the
old key is removed: no downtime, no moment where a secret cannot be read.
"""

from __future__ import annotations

from functools import cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.views.decorators.debug import sensitive_variables


class DecryptionError(Exception):
    """A stored secret could not be decrypted (wrong key or expired token)."""


@cache
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    try:
        return MultiFernet([Fernet(key.encode()) for key in keys])
    except (ValueError, TypeError):
        raise ImproperlyConfigured(
            "MAILSESSIONS_ENCRYPTION_KEYS must be comma-separated Fernet keys "
            "(make one with: python manage.py generatekey)"
        ) from None


def fernet() -> MultiFernet:
    return _fernet(tuple(settings.MAILSESSIONS_ENCRYPTION_KEYS))


@sensitive_variables("plaintext")
def encrypt(plaintext: str) -> str:
    if not plaintext:
        return ""
    return fernet().encrypt(plaintext.encode()).decode()


def decrypt(token: str, *, ttl: int | None = None) -> str:
    """Decrypt a token; ``ttl`` (seconds) refuses tokens older than that."""
    if not token:
        return ""
    try:
        return fernet().decrypt(token.encode(), ttl=ttl).decode()
    except InvalidToken:
        raise DecryptionError(
            "a stored secret could not be decrypted: the encryption key changed "
            "or the secret expired"
        ) from None


def rotate(token: str) -> str:
    """Re-encrypt a token under the newest key (a no-op for empty values)."""
    if not token:
        return ""
    try:
        return fernet().rotate(token.encode()).decode()
    except InvalidToken:
        raise DecryptionError("a stored secret could not be decrypted with any key") from None


def generate_key() -> str:
    return Fernet.generate_key().decode()
