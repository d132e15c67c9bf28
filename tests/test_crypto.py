from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command

from mailsessions import crypto
from mailsessions.models import MailSession
from tests.factories import IN_PASSWORD, make_session


def test_round_trip_and_ciphertext_differs():
    token = crypto.encrypt("s3cret")
    assert token != "s3cret" and "s3cret" not in token
    assert crypto.decrypt(token) == "s3cret"
    assert crypto.encrypt("") == "" and crypto.decrypt("") == ""


def test_wrong_key_is_a_clear_error(settings):
    token = crypto.encrypt("s3cret")
    settings.MAILSESSIONS_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(crypto.DecryptionError, match="could not be decrypted") as info:
        crypto.decrypt(token)
    assert "s3cret" not in str(info.value)


@pytest.mark.django_db
def test_rotatekeys_reencrypts_under_the_new_key(settings, alice):
    session = make_session(alice)
    old_key = settings.MAILSESSIONS_ENCRYPTION_KEYS[0]
    new_key = Fernet.generate_key().decode()
    settings.MAILSESSIONS_ENCRYPTION_KEYS = [new_key, old_key]
    call_command("rotatekeys")
    settings.MAILSESSIONS_ENCRYPTION_KEYS = [new_key]  # the old key can now go
    session = MailSession.objects.get(pk=session.pk)
    assert session.incoming_config().password == IN_PASSWORD
