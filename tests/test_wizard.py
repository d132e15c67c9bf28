"""The wizard, driven through Django's test client (alice creates and edits
her sessions; bob must never see them)."""

from __future__ import annotations

import pytest
from django.contrib.sessions.models import Session
from django.urls import reverse

from mailsessions import crypto
from mailsessions.models import MailSession, Mode
from mailsessions.wizard import Step, show_incoming, show_outgoing
from tests.factories import IN_PASSWORD, make_session
from tests.wizard_walk import INCOMING_IMAP, OUTGOING_SMTP, edit_prefix, post_step, walk

pytestmark = pytest.mark.django_db


def test_read_and_send_walks_every_step_and_saves_both_parts(alice_client, alice):
    response = walk(
        alice_client,
        [
            (Step.MODE, {"mode": Mode.READ_SEND}),
            (Step.INCOMING, INCOMING_IMAP),
            (Step.OUTGOING, OUTGOING_SMTP),
            (Step.REVIEW, {"name": "Support inbox"}),
        ],
    )
    session = MailSession.objects.get(owner=alice)
    assert response.status_code == 302 and response.url == session.get_absolute_url()
    assert session.mode == Mode.READ_SEND
    assert (session.in_protocol, session.in_encryption, session.in_host) == (
        "imap",
        "ssl",
        "imap.example.test",
    )
    assert session.in_port == 993  # blank port takes the protocol/encryption default
    assert session.out_port == 587
    assert session.in_username == "alice@example.test"
    assert crypto.decrypt(session.in_password_encrypted) == "Imap-Pass-Plain-9917"
    assert session.in_password_encrypted != "Imap-Pass-Plain-9917"
    assert session.out_password_encrypted == ""  # borrows the incoming account
    assert session.outgoing_config().password == "Imap-Pass-Plain-9917"
    assert session.test_mail_to == "bob@example.test"


def test_read_only_skips_outgoing_and_saves_no_smtp_settings(alice_client, alice):
    client = alice_client
    client.get(reverse("mailsessions:session-create"))
    response = post_step(client, Step.MODE, {"mode": Mode.READ})
    assert response.context["wizard"]["steps"].current == Step.INCOMING
    response = post_step(
        client, Step.INCOMING, {**INCOMING_IMAP, "in_protocol": "pop3", "in_encryption": "starttls"}
    )
    assert response.context["wizard"]["steps"].current == Step.REVIEW
    assert [s for s, _ in response.context["step_titles"]] == [
        Step.MODE,
        Step.INCOMING,
        Step.REVIEW,
    ]
    post_step(client, Step.REVIEW, {"name": "Reader"})
    session = MailSession.objects.get(owner=alice)
    assert session.mode == Mode.READ
    assert session.in_port == 110
    assert (session.out_host, session.out_port, session.out_password_encrypted) == ("", None, "")


def test_send_only_skips_incoming_and_needs_its_own_credentials(alice_client, alice):
    client = alice_client
    client.get(reverse("mailsessions:session-create"))
    response = post_step(client, Step.MODE, {"mode": Mode.SEND})
    assert response.context["wizard"]["steps"].current == Step.OUTGOING
    response = post_step(client, Step.OUTGOING, OUTGOING_SMTP)
    form = response.context["form"]
    assert "out_username" in form.errors and "out_password" in form.errors
    response = post_step(
        client,
        Step.OUTGOING,
        {
            **OUTGOING_SMTP,
            "out_username": "robot@example.test",
            "out_password": "Smtp-Only-Pw-55",
            "out_encryption": "ssl",
        },
    )
    assert response.context["wizard"]["steps"].current == Step.REVIEW
    post_step(client, Step.REVIEW, {"name": "Sender"})
    session = MailSession.objects.get(owner=alice)
    assert session.mode == Mode.SEND
    assert (session.in_protocol, session.in_host, session.in_password_encrypted) == ("", "", "")
    assert session.out_port == 465
    config = session.outgoing_config()
    assert (config.username, config.password) == ("robot@example.test", "Smtp-Only-Pw-55")
    assert session.sender_address() == "robot@example.test"


def test_no_authentication_keeps_only_the_user_name(alice_client, alice):
    walk(
        alice_client,
        [
            (Step.MODE, {"mode": Mode.SEND}),
            (
                Step.OUTGOING,
                {**OUTGOING_SMTP, "out_no_auth": True, "out_username": "relay@example.test"},
            ),
            (Step.REVIEW, {"name": "Relay"}),
        ],
    )
    session = MailSession.objects.get(owner=alice)
    assert session.out_no_auth and session.out_password_encrypted == ""
    assert session.outgoing_config().username == ""


def test_exchange_session_keeps_endpoint_and_auth_type(alice_client, alice):
    walk(
        alice_client,
        [
            (Step.MODE, {"mode": Mode.READ}),
            (
                Step.INCOMING,
                {
                    **INCOMING_IMAP,
                    "in_protocol": "ews",
                    "in_host": "",
                    "ews_endpoint": "https://outlook.example.test/EWS/Exchange.asmx",
                    "ews_auth_type": "NTLM",
                    "in_username": "EXAMPLE\\alice",
                    "ews_email": "alice@example.test",
                },
            ),
            (Step.REVIEW, {"name": "Exchange"}),
        ],
    )
    session = MailSession.objects.get(owner=alice)
    assert session.in_port == 443
    config = session.incoming_config()
    assert config.ews_endpoint.endswith("/EWS/Exchange.asmx")
    assert config.email_address == "alice@example.test"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("in_host", "", "Enter the server address."),
        ("in_host", "mail example.org", "cannot contain spaces"),
        ("in_host", "bad_host!.example", "valid host name"),
        ("in_port", "0", "1 to 65535"),
        ("in_port", "70000", "1 to 65535"),
        ("in_port", "abc", "whole number"),
        ("in_username", "", "Enter the user account."),
        ("in_password", "", "Enter the password"),
        ("in_encryption", "none", "Allow unencrypted connection"),
    ],
)
def test_bad_incoming_input_names_the_field_and_saves_nothing(alice_client, field, value, message):
    alice_client.get(reverse("mailsessions:session-create"))
    post_step(alice_client, Step.MODE, {"mode": Mode.READ})
    response = post_step(alice_client, Step.INCOMING, {**INCOMING_IMAP, field: value})
    form = response.context["form"]
    assert response.context["wizard"]["steps"].current == Step.INCOMING
    assert message in " ".join(form.errors[field])
    assert message in response.content.decode()
    assert MailSession.objects.count() == 0


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"out_host": ""}, "out_host", "Enter the SMTP server address."),
        ({"out_port": "0"}, "out_port", "1 to 65535"),
        ({"test_mail_to": "not-an-address"}, "test_mail_to", "valid email"),
        ({"out_use_different_credentials": True}, "out_username", "Enter the user name"),
        ({"out_encryption": "none"}, "out_encryption", "Allow unencrypted connection"),
        ({"out_host": "smtp .example.test"}, "out_host", "cannot contain spaces"),
    ],
)
def test_bad_outgoing_input_names_the_field_and_saves_nothing(alice_client, data, field, message):
    alice_client.get(reverse("mailsessions:session-create"))
    post_step(alice_client, Step.MODE, {"mode": Mode.READ_SEND})
    post_step(alice_client, Step.INCOMING, INCOMING_IMAP)
    response = post_step(alice_client, Step.OUTGOING, {**OUTGOING_SMTP, **data})
    errors = " ".join(response.context["form"].errors.get(field, []))
    assert message.lower() in errors.lower()
    assert MailSession.objects.count() == 0


def test_unencrypted_needs_the_explicit_opt_in(alice_client, alice):
    walk(
        alice_client,
        [
            (Step.MODE, {"mode": Mode.READ}),
            (Step.INCOMING, {**INCOMING_IMAP, "in_encryption": "none", "in_allow_plaintext": True}),
            (Step.REVIEW, {"name": "Plain"}),
        ],
    )
    assert MailSession.objects.get(owner=alice).in_encryption == "none"


def test_password_is_encrypted_in_the_wizard_session_storage(alice_client):
    alice_client.get(reverse("mailsessions:session-create"))
    post_step(alice_client, Step.MODE, {"mode": Mode.READ_SEND})
    response = post_step(alice_client, Step.INCOMING, INCOMING_IMAP)
    assert response.context["wizard"]["steps"].current == Step.OUTGOING
    rows = [s.session_data + str(s.get_decoded()) for s in Session.objects.all()]
    assert rows and not any(INCOMING_IMAP["in_password"] in row for row in rows)
    assert INCOMING_IMAP["in_password"] not in response.content.decode()
    # The review step still sees it: it survived the round trip, encrypted.
    post_step(alice_client, Step.OUTGOING, OUTGOING_SMTP)
    response = post_step(alice_client, Step.REVIEW, {"name": "Roundtrip"})
    assert response.status_code == 302
    assert MailSession.objects.get().incoming_config().password == INCOMING_IMAP["in_password"]
    assert not any(
        INCOMING_IMAP["in_password"] in s.session_data + str(s.get_decoded())
        for s in Session.objects.all()
    )


def test_plaintext_password_appears_on_no_page(alice_client, carol_client, alice):
    session = make_session(alice)
    pages = [
        reverse("mailsessions:session-list"),
        session.get_absolute_url(),
        reverse("mailsessions:session-edit", args=[session.pk]),
        reverse("mailsessions:session-delete", args=[session.pk]),
    ]
    for url in pages:
        body = alice_client.get(url).content.decode()
        assert IN_PASSWORD not in body and session.in_password_encrypted not in body, url
    for url in [
        "/admin/mailsessions/mailsession/",
        f"/admin/mailsessions/mailsession/{session.pk}/change/",
    ]:
        response = carol_client.get(url)
        assert response.status_code == 200
        body = response.content.decode()
        assert IN_PASSWORD not in body and session.in_password_encrypted not in body, url
    assert IN_PASSWORD not in repr(session) and IN_PASSWORD not in repr(session.incoming_config())


def test_edit_prefills_and_a_blank_password_keeps_the_stored_one(alice_client, alice):
    session = make_session(alice, mode=Mode.READ)
    url = reverse("mailsessions:session-edit", args=[session.pk])
    prefix = edit_prefix(session.pk)
    response = alice_client.get(url)
    assert response.context["form"].initial["mode"] == Mode.READ
    response = post_step(alice_client, Step.MODE, {"mode": Mode.READ}, url=url, prefix=prefix)
    form = response.context["form"]
    assert form["in_host"].value() == "mail.example.test"
    assert 'value="' + IN_PASSWORD not in response.content.decode()
    response = post_step(
        alice_client,
        Step.INCOMING,
        {**INCOMING_IMAP, "in_host": "imap2.example.test", "in_password": ""},
        url=url,
        prefix=prefix,
    )
    assert response.context["wizard"]["steps"].current == Step.REVIEW
    response = post_step(alice_client, Step.REVIEW, {"name": "Renamed"}, url=url, prefix=prefix)
    assert response.status_code == 302
    session.refresh_from_db()
    assert (session.name, session.in_host) == ("Renamed", "imap2.example.test")
    assert session.incoming_config().password == IN_PASSWORD
    assert MailSession.objects.count() == 1


def test_switching_edit_to_send_only_drops_the_incoming_settings(alice_client, alice):
    session = make_session(alice, mode=Mode.READ_SEND)
    url = reverse("mailsessions:session-edit", args=[session.pk])
    walk(
        alice_client,
        [
            (Step.MODE, {"mode": Mode.SEND}),
            (
                Step.OUTGOING,
                {
                    **OUTGOING_SMTP,
                    "out_username": "robot@example.test",
                    "out_password": "New-Smtp-Pw-1",
                },
            ),
            (Step.REVIEW, {"name": session.name}),
        ],
        url=url,
        prefix=edit_prefix(session.pk),
    )
    session.refresh_from_db()
    assert session.mode == Mode.SEND
    assert (session.in_host, session.in_password_encrypted) == ("", "")


def test_duplicate_name_is_refused_on_the_review_step(alice_client, alice):
    make_session(alice, name="Taken")
    alice_client.get(reverse("mailsessions:session-create"))
    post_step(alice_client, Step.MODE, {"mode": Mode.READ})
    post_step(alice_client, Step.INCOMING, INCOMING_IMAP)
    response = post_step(alice_client, Step.REVIEW, {"name": "Taken"})
    assert "already have a session with this name" in " ".join(
        response.context["form"].errors["name"]
    )
    assert MailSession.objects.count() == 1


def test_conditions_read_only_the_mode_step(rf, alice):
    from mailsessions.wizard import MailSessionWizard

    class Probe:
        object = None

        def __init__(self, mode):
            self.mode = mode

        def get_cleaned_data_for_step(self, step):
            assert step == Step.MODE  # a condition must never read a later step
            return {"mode": self.mode}

    assert show_incoming(Probe(Mode.READ)) and not show_outgoing(Probe(Mode.READ))
    assert show_outgoing(Probe(Mode.SEND)) and not show_incoming(Probe(Mode.SEND))
    assert show_incoming(Probe(Mode.READ_SEND)) and show_outgoing(Probe(Mode.READ_SEND))
    assert MailSessionWizard.condition_dict[Step.INCOMING] is show_incoming


def test_send_only_wizard_can_start_a_test_mail_without_an_incoming_step(alice_client):
    """Regression: the Outgoing step's test asked formtools for the skipped Incoming step."""
    from mailsessions.models import ConnectionTest
    from tests.wizard_walk import NEW_PREFIX, step_payload

    alice_client.get(reverse("mailsessions:session-create"))
    post_step(alice_client, Step.MODE, {"mode": Mode.SEND})
    data = {**OUTGOING_SMTP, "out_username": "robot@example.test", "out_password": "Smtp-Pw-77"}
    payload = step_payload(NEW_PREFIX, Step.OUTGOING, data)
    response = alice_client.post(
        reverse("mailsessions:session-create"), {**payload, "wizard_test": "test_mail"}
    )
    assert response.status_code == 202, response.content
    assert ConnectionTest.objects.get().kind == "test_mail"


def test_an_unknown_posted_step_is_refused_not_a_500(alice_client):
    alice_client.get(reverse("mailsessions:session-create"))
    response = alice_client.post(
        reverse("mailsessions:session-create"), {"mail_session_wizard_new-current_step": "0"}
    )
    assert response.status_code == 400
