"""Set Mail against a real Dovecot (IMAP and POP3) and the loopback EWS fake.

alice owns a read-only session on her mailbox (which may change her own mail);
every test starts with it empty (``alice_mailbox`` / ``ews_mailbox``),
arranges it with direct APPENDs, runs one Set Mail operation and reads the
server's real state back.
"""

from __future__ import annotations

import datetime as dt
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError

from mailsessions import changing, reading, runs
from mailsessions.models import (
    Mode,
    Operation,
    OperationKind,
    Run,
    RunStatus,
    SetAction,
    StoredMessage,
)
from tests.factories import make_session
from tests.servers.dovecot import make_message

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path) -> Path:
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


def alice_session(owner, dovecot, *, protocol="imap", security="ssl"):
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
    session.set_in_password(dovecot.passwords["alice"])
    session.save()
    return session


def set_operation(session, action, **params) -> Operation:
    operation = Operation(
        session=session, name="Tidy up", kind=OperationKind.SET, set_action=action, **params
    )
    operation.full_clean()
    operation.save()
    return operation


def run_set(operation) -> Run:
    return changing.operation_set(run=runs.run_start(operation=operation))


def subject_of(raw: bytes) -> str:
    return str(message_from_bytes(raw, policy=default_policy)["Subject"])


def server_state(mailbox, folder: str) -> dict[str, frozenset[str]]:
    """subject -> IMAP flags of every message in ``folder`` on the server."""
    return {subject_of(m.raw): m.flags for m in mailbox.folder_messages("alice", folder)}


# --- each action over IMAP -------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "before", "after"),
    [
        (SetAction.MARK_READ, set(), {"\\Seen"}),
        (SetAction.MARK_UNREAD, {"\\Seen"}, set()),
        (SetAction.FLAG, {"\\Seen"}, {"\\Seen", "\\Flagged"}),
        (SetAction.UNFLAG, {"\\Flagged", "\\Seen"}, {"\\Seen"}),
    ],
)
def test_flag_actions_change_exactly_the_selected(alice, alice_mailbox, action, before, after):
    alice_mailbox.append_many(
        "alice",
        "INBOX",
        [
            (make_message("Target one"), sorted(before)),
            (make_message("Bystander"), sorted(before)),
            (make_message("Target two"), sorted(before)),
        ],
    )
    operation = set_operation(
        alice_session(alice, alice_mailbox), action, subject_contains="target"
    )

    run = run_set(operation)

    assert run.status == RunStatus.SUCCEEDED, run.error
    assert (run.found, run.changed, run.failed) == (2, 2, 0)
    assert run.retryable is False
    assert server_state(alice_mailbox, "INBOX") == {
        "Target one": frozenset(after),
        "Bystander": frozenset(before),
        "Target two": frozenset(after),
    }


def test_move_into_an_existing_folder(alice, alice_mailbox):
    alice_mailbox.append("alice", "Archive", make_message("Already archived"))
    alice_mailbox.append_many(
        "alice", "INBOX", [make_message("Old 1"), make_message("Keep"), make_message("Old 2")]
    )
    operation = set_operation(
        alice_session(alice, alice_mailbox),
        SetAction.MOVE,
        subject_contains="old",
        target_folder="Archive",
    )

    run = run_set(operation)

    assert run.status == RunStatus.SUCCEEDED, run.error
    assert (run.found, run.changed) == (2, 2)
    assert set(server_state(alice_mailbox, "INBOX")) == {"Keep"}
    assert set(server_state(alice_mailbox, "Archive")) == {"Already archived", "Old 1", "Old 2"}


def test_move_creates_the_folder_when_asked(alice, alice_mailbox):
    alice_mailbox.append_many("alice", "INBOX", [make_message("Project A"), make_message("Other")])
    operation = set_operation(
        alice_session(alice, alice_mailbox),
        SetAction.MOVE,
        subject_contains="project",
        target_folder="Projects/2024",
        create_folder=True,
    )

    run = run_set(operation)

    assert run.status == RunStatus.SUCCEEDED, run.error
    assert "Projects/2024" in alice_mailbox.folders("alice")
    assert set(server_state(alice_mailbox, "Projects/2024")) == {"Project A"}
    assert set(server_state(alice_mailbox, "INBOX")) == {"Other"}


def test_move_to_a_missing_folder_without_create_fails_and_changes_nothing(alice, alice_mailbox):
    alice_mailbox.append_many("alice", "INBOX", [make_message("One"), make_message("Two")])
    operation = set_operation(
        alice_session(alice, alice_mailbox), SetAction.MOVE, target_folder="Nowhere"
    )

    run = run_set(operation)

    assert run.status == RunStatus.FAILED
    assert "folder" in run.error.lower() and "Nowhere" in run.error
    assert run.changed == 0 and run.retryable is False
    assert "Nowhere" not in alice_mailbox.folders("alice")
    assert set(server_state(alice_mailbox, "INBOX")) == {"One", "Two"}


def test_copy_leaves_the_originals(alice, alice_mailbox):
    alice_mailbox.append_many("alice", "INBOX", [make_message("Invoice 7"), make_message("Hi")])
    operation = set_operation(
        alice_session(alice, alice_mailbox),
        SetAction.COPY,
        subject_contains="invoice",
        target_folder="Accounting",
        create_folder=True,
    )

    run = run_set(operation)

    assert run.status == RunStatus.SUCCEEDED, run.error
    assert (run.found, run.changed) == (1, 1)
    assert set(server_state(alice_mailbox, "INBOX")) == {"Invoice 7", "Hi"}
    assert set(server_state(alice_mailbox, "Accounting")) == {"Invoice 7"}


def test_delete_removes_exactly_the_selected(alice, alice_mailbox):
    alice_mailbox.append_many(
        "alice", "INBOX", [make_message("Spam 1"), make_message("Ham"), make_message("Spam 2")]
    )
    operation = set_operation(
        alice_session(alice, alice_mailbox), SetAction.DELETE, subject_contains="spam"
    )

    run = run_set(operation)

    assert run.status == RunStatus.SUCCEEDED, run.error
    assert (run.found, run.changed) == (2, 2)
    # Gone, not merely marked \Deleted; the survivor carries no \Deleted either.
    assert server_state(alice_mailbox, "INBOX") == {"Ham": frozenset()}


def test_nothing_selected_succeeds_with_nothing_changed(alice, alice_mailbox):
    alice_mailbox.append("alice", "INBOX", make_message("Hello"))
    operation = set_operation(
        alice_session(alice, alice_mailbox), SetAction.DELETE, subject_contains="no such thing"
    )

    run = run_set(operation)

    assert (run.status, run.found, run.changed) == (RunStatus.SUCCEEDED, 0, 0)
    assert set(server_state(alice_mailbox, "INBOX")) == {"Hello"}


# --- selection ---------------------------------------------------------------------


def test_filters_select_exactly_the_right_messages(alice, alice_mailbox):
    when = dt.datetime(2024, 3, 10, 12, tzinfo=dt.UTC)
    old = dt.datetime(2023, 1, 1, 12, tzinfo=dt.UTC)
    carol = "Carol <carol@example.org>"
    alice_mailbox.append_many(
        "alice",
        "INBOX",
        [
            (make_message("Report March", sender=carol), [], when),  # the only match
            (make_message("Report read", sender=carol), ["\\Seen"], when),  # read already
            (make_message("Report Dave", sender="dave@example.org"), [], when),  # other sender
            (make_message("Report old", sender=carol), [], old),  # too old
            (make_message("Lunch", sender=carol), [], when),  # other subject
        ],
    )
    operation = set_operation(
        alice_session(alice, alice_mailbox),
        SetAction.FLAG,
        unseen_only=True,
        from_contains="carol@",
        subject_contains="report",
        since=dt.date(2024, 1, 1),
    )

    run = run_set(operation)

    assert run.status == RunStatus.SUCCEEDED, run.error
    assert (run.found, run.changed) == (1, 1)
    flagged = {s for s, f in server_state(alice_mailbox, "INBOX").items() if "\\Flagged" in f}
    assert flagged == {"Report March"}


def test_max_count_newest_first_selects_the_newest(alice, alice_mailbox):
    alice_mailbox.append_many("alice", "INBOX", [make_message(f"M{i}") for i in range(5)])
    operation = set_operation(
        alice_session(alice, alice_mailbox), SetAction.DELETE, max_count=2, newest_first=True
    )

    run = run_set(operation)

    assert (run.status, run.found, run.changed) == (RunStatus.SUCCEEDED, 2, 2)
    assert set(server_state(alice_mailbox, "INBOX")) == {"M0", "M1", "M2"}


def read_first(session, **filters) -> Run:
    operation = Operation(session=session, name="Read", kind=OperationKind.READ, **filters)
    operation.full_clean()
    operation.save()
    run = reading.operation_read(run=runs.run_start(operation=operation))
    assert run.status == RunStatus.SUCCEEDED, run.error
    return run


def test_source_run_selects_the_messages_that_run_stored(alice, alice_mailbox):
    alice_mailbox.append_many(
        "alice", "INBOX", [make_message("Invoice 1"), make_message("Hi"), make_message("Invoice 2")]
    )
    session = alice_session(alice, alice_mailbox)
    read_run = read_first(session, subject_contains="invoice")
    assert read_run.stored == 2
    # Mail that arrives later matches the filters but was not stored by that run.
    alice_mailbox.append("alice", "INBOX", make_message("Invoice 3"))
    operation = set_operation(
        session, SetAction.MOVE, source_run=read_run, target_folder="Paid", create_folder=True
    )

    run = run_set(operation)

    assert run.status == RunStatus.SUCCEEDED, run.error
    assert (run.found, run.changed, run.failed) == (2, 2, 0)
    assert set(server_state(alice_mailbox, "Paid")) == {"Invoice 1", "Invoice 2"}
    assert set(server_state(alice_mailbox, "INBOX")) == {"Hi", "Invoice 3"}
    # The server does not say the new UIDs: stored rows stay as read, and the run says so.
    assert set(StoredMessage.objects.values_list("folder", flat=True)) == {"INBOX"}
    assert "old folder" in run.error


def test_source_run_mark_read_mirrors_flags_into_stored_rows(alice, alice_mailbox):
    alice_mailbox.append_many("alice", "INBOX", [make_message("A"), make_message("B")])
    session = alice_session(alice, alice_mailbox)
    read_run = read_first(session)
    operation = set_operation(session, SetAction.MARK_READ, source_run=read_run)

    run = run_set(operation)

    assert (run.status, run.changed) == (RunStatus.SUCCEEDED, 2)
    assert all("\\Seen" in f for f in server_state(alice_mailbox, "INBOX").values())
    assert set(StoredMessage.objects.values_list("flags", flat=True)) == {"seen"}


def test_source_run_skips_messages_stored_under_another_uidvalidity(alice, alice_mailbox):
    alice_mailbox.append_many("alice", "INBOX", [make_message("A"), make_message("B")])
    session = alice_session(alice, alice_mailbox)
    read_run = read_first(session)
    # As if INBOX had been recreated since: the stored UIDs name other messages now.
    StoredMessage.objects.filter(run=read_run, subject="A").update(uidvalidity=1)
    operation = set_operation(session, SetAction.DELETE, source_run=read_run)

    run = run_set(operation)

    assert run.status == RunStatus.PARTLY_FAILED
    assert (run.found, run.changed, run.failed) == (1, 1, 1)
    assert "UIDVALIDITY" in run.error
    assert set(server_state(alice_mailbox, "INBOX")) == {"A"}
    # Deleting on the server keeps our stored copies.
    assert StoredMessage.objects.filter(run=read_run).count() == 2


def test_source_run_messages_gone_from_the_server_count_as_failed(alice, alice_mailbox):
    alice_mailbox.append("alice", "INBOX", make_message("Once"))
    session = alice_session(alice, alice_mailbox)
    read_run = read_first(session)
    operation = set_operation(session, SetAction.DELETE, source_run=read_run)
    assert run_set(operation).changed == 1

    again = run_set(operation)

    assert again.status == RunStatus.FAILED
    assert (again.found, again.changed, again.failed) == (1, 0, 1)
    assert "no longer on the server" in again.error


# --- POP3 ------------------------------------------------------------------------


def test_pop3_delete_removes_the_matching_messages(alice, alice_mailbox):
    alice_mailbox.append_many(
        "alice", "INBOX", [make_message("Spam 1"), make_message("Ham"), make_message("Spam 2")]
    )
    session = alice_session(alice, alice_mailbox, protocol="pop3", security="starttls")
    # POP3 cannot search headers: the service fetches and parses, like Read Mail.
    operation = set_operation(session, SetAction.DELETE, subject_contains="spam")

    run = run_set(operation)

    assert run.status == RunStatus.SUCCEEDED, run.error
    assert (run.read, run.found, run.changed) == (3, 2, 2)
    assert set(server_state(alice_mailbox, "INBOX")) == {"Ham"}


def test_pop3_move_is_refused_by_validation_and_by_the_service(alice, alice_mailbox):
    alice_mailbox.append_many("alice", "INBOX", [make_message("One"), make_message("Two")])
    session = alice_session(alice, alice_mailbox, protocol="pop3", security="ssl")
    operation = Operation(
        session=session,
        name="Archive",
        kind=OperationKind.SET,
        set_action=SetAction.MOVE,
        target_folder="Archive",
        create_folder=True,
    )
    with pytest.raises(ValidationError) as excinfo:
        operation.full_clean()
    assert "set_action" in excinfo.value.message_dict

    operation.save()  # bypassing clean(), as a bug or a stale row could
    run = run_set(operation)

    assert run.status == RunStatus.FAILED
    assert "POP3" in run.error and "Move to folder" in run.error
    assert (run.found, run.changed) == (0, 0)
    assert run.retryable is False
    assert set(server_state(alice_mailbox, "INBOX")) == {"One", "Two"}
    assert "Archive" not in alice_mailbox.folders("alice")


def test_pop3_unseen_only_is_refused_rather_than_widened(alice, alice_mailbox):
    alice_mailbox.append_many("alice", "INBOX", [(make_message("Read one"), ["\\Seen"])])
    session = alice_session(alice, alice_mailbox, protocol="pop3", security="ssl")
    operation = set_operation(session, SetAction.DELETE, unseen_only=True)

    run = run_set(operation)

    assert run.status == RunStatus.FAILED
    assert "Only unread messages" in run.error
    assert set(server_state(alice_mailbox, "INBOX")) == {"Read one"}


# --- Exchange (through the loopback EWS fake) ------------------------------------------


def ews_session(owner, server):
    session = make_session(
        owner,
        mode=Mode.READ,
        name="Alice Exchange",
        in_protocol="ews",
        in_encryption="none",
        in_allow_plaintext=True,
        in_host="127.0.0.1",
        in_port=server.port,
        in_username="alice",
        in_verify_certificate=False,
        ews_endpoint=server.endpoint,
        ews_auth_type="basic",
        ews_email="alice@example.test",
    )
    session.set_in_password("alice-secret-pw")
    session.save()
    return session


def test_ews_mark_read(alice, ews_mailbox):
    ews_mailbox.add_message("Inbox", make_message("Report"))
    ews_mailbox.add_message("Inbox", make_message("Lunch"))
    operation = set_operation(
        ews_session(alice, ews_mailbox), SetAction.MARK_READ, subject_contains="report"
    )

    run = run_set(operation)

    assert run.status == RunStatus.SUCCEEDED, run.error
    assert (run.found, run.changed) == (1, 1)
    assert {i.subject: i.is_read for i in ews_mailbox.folder_items("Inbox")} == {
        "Report": True,
        "Lunch": False,
    }


def test_ews_move_creating_the_folder(alice, ews_mailbox):
    ews_mailbox.add_message("Inbox", make_message("Receipt"))
    ews_mailbox.add_message("Inbox", make_message("Lunch"))
    operation = set_operation(
        ews_session(alice, ews_mailbox),
        SetAction.MOVE,
        subject_contains="receipt",
        target_folder="Receipts",
        create_folder=True,
    )

    run = run_set(operation)

    assert run.status == RunStatus.SUCCEEDED, run.error
    assert (run.found, run.changed) == (1, 1)
    assert [i.subject for i in ews_mailbox.folder_items("Inbox")] == ["Lunch"]
    assert [i.subject for i in ews_mailbox.folder_items("Receipts")] == ["Receipt"]
