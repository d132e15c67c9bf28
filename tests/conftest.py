"""Shared fixtures.

Personas: alice and bob are ordinary users, each may see and change only
their own sessions; carol is staff and may use the admin.
"""

from __future__ import annotations

import pytest

pytest_plugins = [
    "tests.servers.dovecot",
    "tests.servers.smtp",
    "tests.servers.ews",
    "tests.servers.worker",
    "tests.browser",
]

PASSWORDS = {"alice": "alice-login-pw-1", "bob": "bob-login-pw-1", "carol": "carol-login-pw-1"}


@pytest.fixture
def alice(django_user_model):
    return django_user_model.objects.create_user("alice", "alice@example.test", PASSWORDS["alice"])


@pytest.fixture
def bob(django_user_model):
    return django_user_model.objects.create_user("bob", "bob@example.test", PASSWORDS["bob"])


@pytest.fixture
def carol(django_user_model):
    return django_user_model.objects.create_user(
        "carol", "carol@example.test", PASSWORDS["carol"], is_staff=True, is_superuser=True
    )


@pytest.fixture
def alice_client(client, alice):
    client.force_login(alice)
    return client


@pytest.fixture
def bob_client(alice, bob):
    from django.test import Client

    c = Client()
    c.force_login(bob)
    return c


@pytest.fixture
def carol_client(carol):
    from django.test import Client

    c = Client()
    c.force_login(carol)
    return c
