"""Who may see what: alice owns her sessions; bob gets a 404 for each of them;
anonymous visitors are sent to sign in."""

from __future__ import annotations

import pytest
from django.urls import reverse

from mailsessions.models import MailSession
from tests.factories import make_session

pytestmark = pytest.mark.django_db


def _urls(session):
    return {
        "detail": reverse("mailsessions:session-detail", args=[session.pk]),
        "edit": reverse("mailsessions:session-edit", args=[session.pk]),
        "delete": reverse("mailsessions:session-delete", args=[session.pk]),
    }


def test_anonymous_is_sent_to_sign_in(client, alice):
    session = make_session(alice)
    for url in [
        reverse("mailsessions:session-list"),
        reverse("mailsessions:session-create"),
        *_urls(session).values(),
    ]:
        response = client.get(url)
        assert response.status_code == 302 and response.url.startswith(reverse("login")), url


def test_list_shows_only_own_sessions(alice_client, alice, bob):
    make_session(alice, name="Alice inbox")
    make_session(bob, name="Bob inbox")
    body = alice_client.get(reverse("mailsessions:session-list")).content.decode()
    assert "Alice inbox" in body and "Bob inbox" not in body


def test_another_users_session_is_a_404_for_every_page(bob_client, alice):
    session = make_session(alice)
    for name, url in _urls(session).items():
        assert bob_client.get(url).status_code == 404, name
    assert bob_client.post(_urls(session)["delete"]).status_code == 404
    assert MailSession.objects.filter(pk=session.pk).exists()


def test_owner_deletes_after_confirmation(alice_client, alice):
    session = make_session(alice)
    response = alice_client.get(_urls(session)["delete"])
    assert "Delete “Support inbox”?" in response.content.decode()
    assert MailSession.objects.filter(pk=session.pk).exists()
    response = alice_client.post(_urls(session)["delete"])
    assert response.status_code == 302
    assert not MailSession.objects.filter(pk=session.pk).exists()


def test_detail_shows_the_settings_without_secrets(alice_client, alice):
    session = make_session(alice, in_verify_certificate=False)
    body = alice_client.get(_urls(session)["detail"]).content.decode()
    assert "mail.example.test" in body and "stored (encrypted)" in body
    assert "Certificate verification is turned off" in body


def test_admin_lists_sessions_for_staff_only(alice_client, carol_client, alice):
    make_session(alice)
    assert alice_client.get("/admin/mailsessions/mailsession/").status_code == 302
    body = carol_client.get("/admin/mailsessions/mailsession/?q=example").content.decode()
    assert "Support inbox" in body


def test_list_page_query_count_does_not_grow_with_sessions(
    alice_client, alice, django_assert_max_num_queries
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def queries_for_list() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert alice_client.get(reverse("mailsessions:session-list")).status_code == 200
        return len(captured)

    for i in range(3):
        make_session(alice, name=f"Inbox {i}")
    few = queries_for_list()
    for i in range(3, 40):
        make_session(alice, name=f"Inbox {i}")
    assert queries_for_list() == few
