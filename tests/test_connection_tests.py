"""Test connection / Send test mail, from the button to the worker and back.

alice tests her own (saved or unsaved) sessions; bob may not read her
results. The end-to-end tests run a real Celery worker process on Redis.
"""

from __future__ import annotations

import threading

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from mailsessions.models import ConnectionTest, MailSession, Mode
from mailsessions.models import TestStatus as Status
from mailsessions.wizard import Step
from tests.factories import make_session
from tests.servers.worker import REDIS_URL, wait_until
from tests.wizard_walk import INCOMING_IMAP, NEW_PREFIX, post_step, step_payload


def _incoming_for(dovecot, **over):
    return {
        **INCOMING_IMAP,
        "in_host": "127.0.0.1",
        "in_port": str(dovecot.imaps_port),
        "in_username": "alice",
        "in_password": dovecot.passwords["alice"],
        "in_verify_certificate": False,
        **over,
    }


def _poll(client, url, timeout=30):
    def done():
        data = client.get(url).json()
        return data if data["done"] else None

    return wait_until(done, timeout=timeout, interval=0.2)


@pytest.mark.django_db
def test_invalid_step_data_is_refused_with_field_errors(alice_client):
    alice_client.get(reverse("mailsessions:session-create"))
    post_step(alice_client, Step.MODE, {"mode": Mode.READ})
    payload = step_payload(NEW_PREFIX, Step.INCOMING, {**INCOMING_IMAP, "in_host": "bad host"})
    response = alice_client.post(
        reverse("mailsessions:session-create"), {**payload, "wizard_test": "incoming"}
    )
    assert response.status_code == 400
    assert "cannot contain spaces" in response.json()["errors"]["in_host"][0]
    assert ConnectionTest.objects.count() == 0


@pytest.mark.django_db
def test_rate_limit_per_user(alice_client, alice, settings):
    settings.MAILSESSIONS_TEST_RATE_PER_MINUTE = 2
    session = make_session(alice)
    url = reverse("mailsessions:session-test", args=[session.pk, "incoming"])
    assert alice_client.post(url).status_code == 202
    assert alice_client.post(url).status_code == 202
    response = alice_client.post(url)
    assert response.status_code == 429 and "limit is 2" in response.json()["error"]


@pytest.mark.django_db
def test_another_user_cannot_read_a_test_result(alice_client, bob_client, alice):
    session = make_session(alice)
    response = alice_client.post(
        reverse("mailsessions:session-test", args=[session.pk, "incoming"])
    )
    status_url = response.json()["status_url"]
    assert alice_client.get(status_url).status_code == 200
    assert bob_client.get(status_url).status_code == 404
    assert (
        bob_client.post(
            reverse("mailsessions:session-test", args=[session.pk, "incoming"])
        ).status_code
        == 404
    )


@pytest.mark.django_db(transaction=True)
def test_wizard_button_runs_in_a_real_worker_and_no_password_reaches_redis(
    alice_client, alice_mailbox, celery_worker_process
):
    import redis

    password = alice_mailbox.passwords["alice"]
    captured: list[str] = []
    monitor_conn = redis.Redis.from_url(REDIS_URL)
    stop = threading.Event()

    def capture():
        with monitor_conn.monitor() as monitor:
            for command in monitor.listen():
                captured.append(str(command.get("command", "")))
                if stop.is_set():
                    return

    thread = threading.Thread(target=capture, daemon=True)
    thread.start()
    url = reverse("mailsessions:session-create")
    alice_client.get(url)
    post_step(alice_client, Step.MODE, {"mode": Mode.READ})
    payload = step_payload(NEW_PREFIX, Step.INCOMING, _incoming_for(alice_mailbox))
    response = alice_client.post(url, {**payload, "wizard_test": "incoming"})
    assert response.status_code == 202, response.content
    try:
        result = _poll(alice_client, response.json()["status_url"])
    except AssertionError:
        raise AssertionError(celery_worker_process.log[-4000:]) from None
    stop.set()
    redis.Redis.from_url(REDIS_URL).ping()  # wakes the monitor loop so it can end
    thread.join(5)

    assert result["status"] == Status.PASSED, (result, celery_worker_process.log[-3000:])
    names = [s["name"] for s in result["stages"]]
    assert names[:3] == ["dns", "policy", "tcp"] and "auth" in names and "mailbox" in names
    test = ConnectionTest.objects.get()
    assert test.config_encrypted == ""  # the encrypted settings are wiped after the run
    assert any("LPUSH" in c or "lpush" in c for c in captured), "the task was not seen on Redis"
    assert not any(password in c for c in captured)
    # The wizard's unsaved session was not saved by testing it.
    assert MailSession.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_saved_session_test_mail_arrives_and_is_recorded(
    alice_client, alice, smtp_noauth, alice_mailbox, celery_worker_process
):
    smtp_noauth.clear()
    session = make_session(
        alice,
        mode=Mode.SEND,
        out_host="127.0.0.1",
        out_port=smtp_noauth.port,
        out_encryption="none",
        out_allow_plaintext=True,
        out_use_different_credentials=False,
        out_no_auth=True,
        out_username="robot@example.test",
        test_mail_to="bob@example.test",
    )
    response = alice_client.post(
        reverse("mailsessions:session-test", args=[session.pk, "test_mail"])
    )
    assert response.status_code == 202
    result = _poll(alice_client, response.json()["status_url"])
    assert result["status"] == Status.PASSED, result
    received = smtp_noauth.wait_for(1)[0]
    assert received.rcpt_tos == ("bob@example.test",)
    assert b"Mail Sessions test mail" in received.content
    session.refresh_from_db()
    assert session.last_test_outcome == "passed"
    page = alice_client.get(reverse("mailsessions:session-list")).content.decode()
    assert "passed" in page


@pytest.mark.django_db
def test_testsession_command_prints_stages_and_fails_nonzero(alice, alice_mailbox, capsys):
    good = make_session(
        alice,
        mode=Mode.READ,
        name="Good",
        in_host="127.0.0.1",
        in_port=alice_mailbox.imaps_port,
        in_username="alice",
        in_verify_certificate=False,
    )
    good.set_in_password(alice_mailbox.passwords["alice"])
    good.save()
    call_command("testsession", str(good.pk))
    out = capsys.readouterr().out
    assert "Authenticate: logged in as alice" in out and "All stages passed" in out
    good.refresh_from_db()
    assert good.last_test_outcome == "passed" and "auth" in [
        s["name"] for s in good.last_test_stages
    ]
    bad = make_session(
        alice,
        mode=Mode.READ,
        name="Bad",
        in_host="127.0.0.1",
        in_port=alice_mailbox.imaps_port,
        in_username="alice",
        in_verify_certificate=False,
    )
    with pytest.raises(CommandError, match="failed"):
        call_command("testsession", str(bad.pk))
    assert "authentication failed for user alice" in capsys.readouterr().out
