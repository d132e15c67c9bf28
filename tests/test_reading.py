"""Read Mail against a real Dovecot (IMAP and POP3).

alice owns a read-only session on her Dovecot mailbox; every test starts with
it empty (``alice_mailbox``) and arranges it with direct IMAP APPENDs, then
checks the stored rows and the server's real state afterwards.
"""

from __future__ import annotations

import datetime as dt
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError

from mailsessions import reading, runs
from mailsessions.backends.base import FetchedMessage
from mailsessions.mime import parse_message
from mailsessions.models import (
    AfterRead,
    Mode,
    Operation,
    OperationKind,
    Run,
    RunStatus,
    StoredMessage,
)
from tests.factories import alice_session, make_session, read_operation
from tests.messages import EXPECTED, corpus
from tests.servers.dovecot import make_message

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path) -> Path:
    root = tmp_path / "media"
    settings.MEDIA_ROOT = root
    return root


def run_read(operation) -> Run:
    return reading.operation_read(run=runs.run_start(operation=operation, trigger="manual"))


def subjects(run: Run) -> set[str]:
    return set(StoredMessage.objects.filter(run=run).values_list("subject", flat=True))


def assert_matches_corpus(messages, raws: dict[str, bytes]) -> None:
    by_subject = {m.subject: m for m in messages}
    assert len(by_subject) == len(EXPECTED)
    for name, facts in EXPECTED.items():
        stored = by_subject[facts["subject"]]
        assert stored.from_addr == facts["from"], name
        assert stored.to == ", ".join(facts["to"]), name
        if facts["text"]:
            assert facts["text"] in stored.text_body, name
        if facts["html"]:
            assert facts["html"] in stored.html_body, name
        assert [a.filename for a in stored.attachments.all()] == facts["attachments"], name
        assert bool(stored.defects) == facts["defects"], name
        with stored.raw.open("rb") as f:
            # Servers may normalise line ends; the content must be the same.
            assert f.read().replace(b"\r\n", b"\n") == raws[name].replace(b"\r\n", b"\n"), name


# --- the whole corpus ----------------------------------------------------------


def test_corpus_over_imap_ssl_then_nothing_new(alice, alice_mailbox):
    raws = corpus()
    alice_mailbox.append_many("alice", "INBOX", list(raws.values()))
    operation = read_operation(alice_session(alice, alice_mailbox))

    run = run_read(operation)

    assert run.status == RunStatus.SUCCEEDED, run.error
    assert (run.found, run.read, run.stored, run.failed) == (len(raws),) * 3 + (0,)
    assert run.started and run.finished and run.duration_ms is not None
    assert run.retryable is False
    messages = list(StoredMessage.objects.filter(run=run).prefetch_related("attachments"))
    assert_matches_corpus(messages, raws)
    assert {m.uidvalidity for m in messages} != {0}  # IMAP records the UIDVALIDITY
    pdf = messages[0].attachments.model.objects.get(filename="report.pdf")
    assert pdf.file.read().startswith(b"%PDF-1.4")
    # Reading over IMAP never marks mail as seen.
    assert all("\\Seen" not in m.flags for m in alice_mailbox.folder_messages("alice", "INBOX"))

    again = run_read(operation)
    assert again.status == RunStatus.SUCCEEDED
    assert (again.found, again.stored) == (0, 0)
    assert StoredMessage.objects.count() == len(raws)


def test_corpus_over_pop3_starttls_then_nothing_new(alice, alice_mailbox):
    raws = corpus()
    alice_mailbox.append_many("alice", "INBOX", list(raws.values()))
    session = alice_session(alice, alice_mailbox, protocol="pop3", security="starttls")
    operation = read_operation(session)

    run = run_read(operation)

    assert run.status == RunStatus.SUCCEEDED, run.error
    assert (run.found, run.stored) == (len(raws), len(raws))
    messages = list(StoredMessage.objects.filter(run=run).prefetch_related("attachments"))
    assert_matches_corpus(messages, raws)
    assert {m.uidvalidity for m in messages} == {0}

    again = run_read(operation)
    assert (again.status, again.found, again.stored) == (RunStatus.SUCCEEDED, 0, 0)
    # POP3 leaves the mail where it was.
    assert len(alice_mailbox.folder_messages("alice", "INBOX")) == len(raws)


def test_a_message_stored_meanwhile_counts_as_duplicate(alice, alice_mailbox):
    alice_mailbox.append_many("alice", "INBOX", [make_message("One"), make_message("Two")])
    session = alice_session(alice, alice_mailbox, protocol="pop3", security="ssl")
    operation = read_operation(session)
    first = run_read(operation)
    assert first.stored == 2
    # Another run that read the same message and the first run's view of the
    # store went out of date: the batch's duplicate check catches it.
    stored = StoredMessage.objects.filter(subject="One").get()
    tally = reading._Tally()
    raw = stored.raw.read()
    fetched = FetchedMessage(server_id=stored.server_id, raw=raw, folder="INBOX")
    ids = reading._store_batch(first, session, "INBOX", 0, [(fetched, parse_message(raw))], tally)
    assert ids == [] and tally.duplicates == 1 and tally.stored == 0


# --- filters -----------------------------------------------------------------------


def test_subject_filter_over_imap(alice, alice_mailbox):
    alice_mailbox.append_many(
        "alice",
        "INBOX",
        [make_message("Invoice 1"), make_message("Hello"), make_message("invoice 2")],
    )
    run = run_read(read_operation(alice_session(alice, alice_mailbox), subject_contains="Invoice"))
    assert run.status == RunStatus.SUCCEEDED
    assert subjects(run) == {"Invoice 1", "invoice 2"}
    assert run.found == 2


def test_subject_filter_and_max_count_over_pop3_apply_after_parsing(alice, alice_mailbox):
    alice_mailbox.append_many(
        "alice",
        "INBOX",
        [make_message(s) for s in ("Invoice 1", "Hello", "Invoice 2", "Invoice 3")],
    )
    session = alice_session(alice, alice_mailbox, protocol="pop3", security="ssl")
    operation = read_operation(session, subject_contains="invoice", max_count=2, newest_first=True)
    run = run_read(operation)
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert subjects(run) == {"Invoice 3", "Invoice 2"}
    assert (run.found, run.stored) == (2, 2)


def test_unseen_only_over_imap(alice, alice_mailbox):
    alice_mailbox.append_many(
        "alice",
        "INBOX",
        [(make_message("Old news"), ["\\Seen"]), (make_message("Fresh"), [])],
    )
    run = run_read(read_operation(alice_session(alice, alice_mailbox), unseen_only=True))
    assert subjects(run) == {"Fresh"}


def test_unseen_only_over_pop3_is_ignored_with_a_note(alice, alice_mailbox):
    alice_mailbox.append_many(
        "alice", "INBOX", [(make_message("Old news"), ["\\Seen"]), make_message("Fresh")]
    )
    session = alice_session(alice, alice_mailbox, protocol="pop3", security="ssl")
    run = run_read(read_operation(session, unseen_only=True))
    assert run.status == RunStatus.SUCCEEDED
    assert subjects(run) == {"Old news", "Fresh"}
    assert "“Only unread messages” was ignored" in run.error


def test_max_count_newest_first_over_imap(alice, alice_mailbox):
    alice_mailbox.append_many("alice", "INBOX", [make_message(f"Mail {i}") for i in range(1, 6)])
    operation = read_operation(alice_session(alice, alice_mailbox), max_count=2, newest_first=True)
    run = run_read(operation)
    assert subjects(run) == {"Mail 4", "Mail 5"}
    assert (run.found, run.stored) == (2, 2)


def test_since_before_over_pop3_use_the_date_header(alice, alice_mailbox):
    dates = {"Early": dt.datetime(2024, 1, 1, 12, tzinfo=dt.UTC)}
    dates["Middle"] = dt.datetime(2024, 2, 1, 12, tzinfo=dt.UTC)
    dates["Late"] = dt.datetime(2024, 3, 1, 12, tzinfo=dt.UTC)
    alice_mailbox.append_many("alice", "INBOX", [make_message(s, date=d) for s, d in dates.items()])
    session = alice_session(alice, alice_mailbox, protocol="pop3", security="ssl")
    operation = read_operation(session, since=dt.date(2024, 1, 15), before=dt.date(2024, 3, 1))
    assert subjects(run_read(operation)) == {"Middle"}


# --- after reading -----------------------------------------------------------------


def test_mark_read_sets_seen_only_on_stored_messages(alice, alice_mailbox):
    keep, other = alice_mailbox.append_many(
        "alice", "INBOX", [make_message("Keep this"), make_message("Something else")]
    )
    operation = read_operation(
        alice_session(alice, alice_mailbox),
        subject_contains="keep",
        after_read=AfterRead.MARK_READ,
    )
    run = run_read(operation)
    assert (run.stored, run.changed) == (1, 1)
    flags = {m.uid: m.flags for m in alice_mailbox.folder_messages("alice", "INBOX")}
    assert "\\Seen" in flags[keep]
    assert "\\Seen" not in flags[other]


def test_move_moves_the_stored_messages(alice, alice_mailbox):
    alice_mailbox.append_many(
        "alice", "INBOX", [make_message("Archive me"), make_message("Stay here")]
    )
    operation = read_operation(
        alice_session(alice, alice_mailbox),
        subject_contains="archive",
        after_read=AfterRead.MOVE,
        move_to="Archive",
    )
    run = run_read(operation)
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert (run.stored, run.changed) == (1, 1)
    inbox = alice_mailbox.folder_messages("alice", "INBOX")
    archive = alice_mailbox.folder_messages("alice", "Archive")
    assert [b"Stay here" in m.raw for m in inbox] == [True]
    assert [b"Archive me" in m.raw for m in archive] == [True]


def test_delete_over_pop3_deletes_the_stored_messages(alice, alice_mailbox):
    alice_mailbox.append_many(
        "alice", "INBOX", [make_message("Delete me"), make_message("Stay here")]
    )
    session = alice_session(alice, alice_mailbox, protocol="pop3", security="ssl")
    operation = read_operation(session, subject_contains="delete", after_read=AfterRead.DELETE)
    run = run_read(operation)
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert (run.stored, run.changed) == (1, 1)
    inbox = alice_mailbox.folder_messages("alice", "INBOX")
    assert [b"Stay here" in m.raw for m in inbox] == [True]
    assert StoredMessage.objects.get().subject == "Delete me"


# --- failures and validation -----------------------------------------------------------


def test_wrong_password_is_a_failed_run_not_an_exception(alice, alice_mailbox):
    alice_mailbox.append("alice", "INBOX", make_message("Hello"))
    session = alice_session(alice, alice_mailbox, password="not-the-password")
    run = run_read(read_operation(session))
    assert run.status == RunStatus.FAILED
    assert "authentication failed for user alice" in run.error
    assert "not-the-password" not in run.error
    assert run.retryable is False
    assert run.finished is not None and run.stored == 0
    assert Run.objects.get(pk=run.pk).status == RunStatus.FAILED


def test_read_on_a_send_only_session_is_refused_naming_the_mode(alice):
    session = make_session(alice, mode=Mode.SEND, name="Support inbox")
    operation = Operation(session=session, name="Read", kind=OperationKind.READ)
    with pytest.raises(ValidationError) as info:
        operation.full_clean()
    assert (
        "“Support inbox” is a send-only session (Send mails via SMTP): it cannot read mail."
        in info.value.message_dict["kind"]
    )


def test_move_on_pop3_is_a_validation_error_on_after_read(alice, alice_mailbox):
    session = alice_session(alice, alice_mailbox, protocol="pop3", security="ssl")
    operation = Operation(
        session=session,
        name="Read",
        kind=OperationKind.READ,
        after_read=AfterRead.MOVE,
        move_to="Archive",
    )
    with pytest.raises(ValidationError) as info:
        operation.full_clean()
    assert "POP3 can only leave or delete" in info.value.message_dict["after_read"][0]


def test_move_needs_a_target_folder(alice, alice_mailbox):
    operation = Operation(
        session=alice_session(alice, alice_mailbox),
        name="Read",
        kind=OperationKind.READ,
        after_read=AfterRead.MOVE,
    )
    with pytest.raises(ValidationError) as info:
        operation.full_clean()
    assert "move_to" in info.value.message_dict


def test_attachment_names_cannot_escape_the_storage_root(alice, alice_mailbox, media_root):
    message = EmailMessage(policy=SMTP)
    message["From"] = "Mallory <mallory@example.net>"
    message["To"] = "alice@example.org"
    message["Subject"] = "Traversal"
    message.set_content("See attachments.")
    message.add_attachment(b"evil", maintype="text", subtype="plain", filename="../../evil.txt")
    message.add_attachment(
        b"worse", maintype="application", subtype="octet-stream", filename="..\\..\\cmd.bat"
    )
    alice_mailbox.append("alice", "INBOX", message.as_bytes())

    run = run_read(read_operation(alice_session(alice, alice_mailbox)))

    assert run.status == RunStatus.SUCCEEDED, run.error
    stored = StoredMessage.objects.get()
    attachments = list(stored.attachments.all())
    assert [a.filename for a in attachments] == ["../../evil.txt", "..\\..\\cmd.bat"]
    root = media_root.resolve()
    for attachment, content in zip(attachments, (b"evil", b"worse"), strict=True):
        path = Path(attachment.file.path).resolve()
        assert path.is_relative_to(root / "attachments" / str(stored.pk))
        assert path.read_bytes() == content
    assert [Path(a.file.name).name for a in attachments] == ["evil.txt", "cmd.bat"]
    assert not (media_root.parent / "evil.txt").exists()


def test_oversized_attachments_keep_their_metadata_only(alice, alice_mailbox):
    alice_mailbox.append("alice", "INBOX", corpus()["nested_mixed"])
    operation = read_operation(alice_session(alice, alice_mailbox), attachment_size_cap=10)
    run = run_read(operation)
    attachment = StoredMessage.objects.get(run=run).attachments.get()
    assert attachment.filename == "report.pdf" and attachment.too_large
    assert not attachment.file and attachment.size > 10


# --- Exchange (through the loopback EWS fake) ------------------------------------------


def test_corpus_over_ews_with_mark_read(alice, ews_mailbox):
    raws = corpus()
    for raw in raws.values():
        ews_mailbox.add_message("Inbox", raw)
    session = make_session(
        alice,
        mode=Mode.READ,
        name="Alice Exchange",
        in_protocol="ews",
        in_encryption="none",
        in_allow_plaintext=True,
        in_host="127.0.0.1",
        in_port=ews_mailbox.port,
        in_username="alice",
        in_verify_certificate=False,
        ews_endpoint=ews_mailbox.endpoint,
        ews_auth_type="basic",
        ews_email="alice@example.test",
    )
    session.set_in_password("alice-secret-pw")
    session.save()
    operation = read_operation(session, after_read=AfterRead.MARK_READ)

    run = run_read(operation)

    assert run.status == RunStatus.SUCCEEDED, run.error
    assert (run.found, run.stored, run.changed) == (len(raws),) * 3
    messages = list(StoredMessage.objects.filter(run=run).prefetch_related("attachments"))
    assert_matches_corpus(messages, raws)
    assert all(item.is_read for item in ews_mailbox.folder_items("Inbox"))

    again = run_read(operation)
    assert (again.status, again.found, again.stored) == (RunStatus.SUCCEEDED, 0, 0)
