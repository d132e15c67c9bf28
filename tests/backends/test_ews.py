"""EWSBackend against the loopback EWS fake (tests/servers/ews.py).

exchangelib's real code builds every SOAP request and parses every answer;
the fake keeps the mailbox state the assertions read. alice owns the mailbox
and may do everything; a wrong password is refused with HTTP 401.
"""

from __future__ import annotations

import datetime as dt
import socket

import pytest
from exchangelib.protocol import Protocol

from mailsessions.backends import get_backend_class
from mailsessions.backends.base import (
    AuthenticationFailed,
    ConnectionFailed,
    Flag,
    FolderNotFound,
    OutgoingBackend,
    SearchCriteria,
    TLSFailed,
)
from mailsessions.backends.ews import EWSBackend
from tests.servers.ews import ews_config


def make_message(
    subject: str,
    *,
    sender: str = "Bob <bob@example.test>",
    to: str = "alice@example.test",
    date: str = "Mon, 01 Jan 2024 10:00:00 +0000",
    body: str = "Hello.",
) -> bytes:
    return (
        f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nDate: {date}\r\n"
        f"Message-ID: <{abs(hash((subject, date)))}@example.test>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        f"{body}\r\n"
    ).encode()


@pytest.fixture
def backend(ews_mailbox):
    with EWSBackend(ews_config(ews_mailbox)) as b:
        yield b


def ids_by_subject(server, folder: str) -> dict[str, str]:
    return {i.subject: i.id for i in server.folder_items(folder)}


# --- connecting ------------------------------------------------------------


def test_registry_finds_the_backend():
    assert get_backend_class("ews") is EWSBackend
    assert issubclass(EWSBackend, OutgoingBackend)


def test_connect_and_login_reads_the_inbox(ews_mailbox):
    backend = EWSBackend(ews_config(ews_mailbox))
    backend.connect()
    assert ews_mailbox.requests == []  # building the Account sends nothing
    backend.login()
    backend.close()
    assert ews_mailbox.requests and set(ews_mailbox.requests) == {"GetFolder"}
    # The version came from the fake's ServerVersionInfo header, not the pin.
    assert "15.1.2507.6" in backend.greeting
    assert "auth=basic" in backend.capabilities


def test_wrong_password_is_authentication_failed(ews_mailbox):
    config = ews_config(ews_mailbox, password="not-the-password")
    with pytest.raises(AuthenticationFailed) as info:
        with EWSBackend(config):
            pass
    assert str(info.value) == "authentication failed for user alice"
    assert "not-the-password" not in str(info.value)
    assert info.value.retryable is False
    assert ews_mailbox.auth_failures >= 1


def test_password_not_in_repr(ews_mailbox):
    backend = EWSBackend(ews_config(ews_mailbox))
    backend.connect()
    try:
        assert "alice-secret-pw" not in repr(backend)
        assert "alice-secret-pw" not in repr(backend.account.protocol)
    finally:
        backend.close()


def test_closed_port_is_connection_failed(ews_mailbox):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Nothing listens on ``port`` any more.
    config = ews_config(
        ews_mailbox, port=port, ews_endpoint=f"http://127.0.0.1:{port}/EWS/Exchange.asmx"
    )
    with pytest.raises(ConnectionFailed) as info:
        with EWSBackend(config):
            pass
    assert "refused" in str(info.value)
    assert info.value.retryable is True


def test_self_signed_certificate_is_refused_when_verifying(ews_tls_server):
    ews_tls_server.reset()
    with pytest.raises(TLSFailed, match="self-signed") as info:
        with EWSBackend(ews_config(ews_tls_server, verify_certificate=True)):
            pass
    assert info.value.retryable is False
    assert ews_tls_server.requests == []


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_verification_off_accepts_the_certificate(ews_tls_server):
    ews_tls_server.reset()
    ews_tls_server.add_message("Inbox", make_message("over tls"))
    with EWSBackend(ews_config(ews_tls_server, verify_certificate=False)) as backend:
        assert backend.folder_info("Inbox").message_count == 1
    # Only this backend skipped verification: a verifying one still refuses.
    with pytest.raises(TLSFailed):
        with EWSBackend(ews_config(ews_tls_server, verify_certificate=True)):
            pass


def test_close_forgets_the_cached_protocol(ews_mailbox):
    backend = EWSBackend(ews_config(ews_mailbox))
    backend.open()
    config = backend.account.protocol.config
    assert Protocol[config][0] is not None
    backend.close()
    with pytest.raises(KeyError):
        Protocol[config]


def test_silent_server_times_out(ews_mailbox):
    # The kernel completes the TCP handshake for a listening socket nobody
    # accepts from, so the request is sent and no answer ever comes.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        config = ews_config(
            ews_mailbox,
            timeout=0.5,
            ews_endpoint=f"http://127.0.0.1:{port}/EWS/Exchange.asmx",
        )
        with pytest.raises(ConnectionFailed, match="did not answer within 0.5 s") as info:
            with EWSBackend(config):
                pass
    assert info.value.retryable is True


def test_unknown_auth_type_is_explained(ews_mailbox):
    with pytest.raises(Exception, match="unknown Exchange authentication type 'kerberos-ish'"):
        EWSBackend(ews_config(ews_mailbox, ews_auth_type="kerberos-ish")).connect()


def test_timeout_is_per_backend(ews_mailbox):
    a = EWSBackend(ews_config(ews_mailbox, timeout=3.0))
    b = EWSBackend(ews_config(ews_mailbox, timeout=7.0))
    a.connect()
    b.connect()
    try:
        assert a.account.protocol is not b.account.protocol
        assert (a.account.protocol.TIMEOUT, b.account.protocol.TIMEOUT) == (3.0, 7.0)
    finally:
        a.close()
        b.close()


# --- folders ---------------------------------------------------------------


def test_list_folders(backend, ews_mailbox):
    ews_mailbox.add_folder("Inbox/Receipts")
    ews_mailbox.add_folder("Inbox/Receipts/2024")
    ews_mailbox.add_folder("Projects")
    ews_mailbox.add_folder("Calendar", folder_class="IPF.Appointment")  # not mail: hidden
    assert backend.list_folders() == [
        "Deleted Items",
        "Drafts",
        "Inbox",
        "Inbox/Receipts",
        "Inbox/Receipts/2024",
        "Projects",
        "Sent Items",
    ]


def test_folder_info_counts(backend, ews_mailbox):
    ews_mailbox.add_message("Inbox", make_message("one"), is_read=True)
    ews_mailbox.add_message("Inbox", make_message("two"))
    ews_mailbox.add_message("Inbox", make_message("three"))
    info = backend.folder_info("Inbox")
    assert (info.name, info.message_count, info.unseen_count) == ("Inbox", 3, 2)
    assert backend.folder_info("INBOX").message_count == 3  # the IMAP spelling works too


def test_missing_folder(backend):
    with pytest.raises(FolderNotFound, match="Nope/Deeper"):
        backend.folder_info("Nope/Deeper")


# --- search ----------------------------------------------------------------


@pytest.fixture
def inbox(ews_mailbox):
    """Five messages in alice's inbox with different senders, dates, sizes and read state."""
    add = ews_mailbox.add_message
    add("Inbox", make_message("Invoice 1", date="Mon, 01 Jan 2024 09:00:00 +0000"), is_read=True)
    add(
        "Inbox",
        make_message(
            "invoice 2", sender="Carol <carol@example.test>", date="Tue, 02 Jan 2024 09:00:00 +0000"
        ),
    )
    add(
        "Inbox",
        make_message(
            "Lunch",
            date="Wed, 03 Jan 2024 09:00:00 +0000",
            body="x" * 5000,
            to="Dave <dave@example.test>",
        ),
    )
    add("Inbox", make_message("Report", date="Thu, 04 Jan 2024 09:00:00 +0000"), is_read=True)
    add(
        "Inbox",
        make_message(
            "Invoice 3", sender="carol@example.test", date="Fri, 05 Jan 2024 09:00:00 +0000"
        ),
    )
    return ews_mailbox


def subjects(server, ids: list[str]) -> list[str]:
    by_id = {i.id: i.subject for i in server.folder_items("Inbox")}
    return [by_id[i] for i in ids]


def test_search_everything_oldest_first(backend, inbox):
    ids = backend.search("Inbox", SearchCriteria())
    assert subjects(inbox, ids) == ["Invoice 1", "invoice 2", "Lunch", "Report", "Invoice 3"]
    assert inbox.count("FindItem") == 1


def test_search_newest_first_with_limit(backend, inbox):
    ids = backend.search("Inbox", SearchCriteria(), newest_first=True, limit=2)
    assert subjects(inbox, ids) == ["Invoice 3", "Report"]


@pytest.mark.parametrize(
    "criteria, expected",
    [
        (SearchCriteria(unseen_only=True), ["invoice 2", "Lunch", "Invoice 3"]),
        (SearchCriteria(subject_contains="INVOICE"), ["Invoice 1", "invoice 2", "Invoice 3"]),
        (SearchCriteria(from_contains="carol"), ["invoice 2", "Invoice 3"]),
        (SearchCriteria(to_contains="dave"), ["Lunch"]),
        (
            SearchCriteria(since=dt.date(2024, 1, 2), before=dt.date(2024, 1, 4)),
            ["invoice 2", "Lunch"],
        ),
        (SearchCriteria(larger_than=3000), ["Lunch"]),
        (
            SearchCriteria(unseen_only=True, subject_contains="invoice", from_contains="carol"),
            ["invoice 2", "Invoice 3"],
        ),
        (SearchCriteria(subject_contains="no such subject"), []),
    ],
)
def test_search_criteria_select_exactly(backend, inbox, criteria, expected):
    assert subjects(inbox, backend.search("Inbox", criteria)) == expected


def test_search_exclude_ids_applies_before_limit(backend, inbox):
    first_two = backend.search("Inbox", SearchCriteria(), limit=2)
    ids = backend.search("Inbox", SearchCriteria(exclude_ids=frozenset(first_two)), limit=2)
    assert subjects(inbox, ids) == ["Lunch", "Report"]


def test_search_pages_through_large_folders(backend, ews_mailbox):
    for n in range(12):
        ews_mailbox.add_message(
            "Inbox", make_message(f"m{n}", date=f"Mon, 01 Jan 2024 10:{n:02d}:00 +0000")
        )
    ids = backend.search("Inbox", SearchCriteria(), limit=5)
    assert subjects(ews_mailbox, ids) == [f"m{n}" for n in range(5)]


# --- fetch -----------------------------------------------------------------


def test_fetch_returns_identical_raw_bytes_in_batches(ews_mailbox):
    raws = [
        make_message(f"msg {n}", date=f"Mon, 01 Jan 2024 10:0{n}:00 +0000", body=f"body {n} \u00e9")
        for n in range(7)
    ]
    for n, raw in enumerate(raws):
        ews_mailbox.add_message("Inbox", raw, is_read=(n == 0))
    with EWSBackend(ews_config(ews_mailbox)) as backend:
        backend.batch_size = 3
        ids = backend.search("Inbox", SearchCriteria())
        before = ews_mailbox.count("GetItem")
        fetched = list(backend.fetch("Inbox", ids))
    assert ews_mailbox.count("GetItem") - before == 3  # 7 messages, 3 per round trip
    assert [f.raw for f in fetched] == raws
    assert [f.server_id for f in fetched] == ids
    assert fetched[0].flags == frozenset({Flag.SEEN})
    assert fetched[1].flags == frozenset()
    assert fetched[0].size == len(raws[0])
    assert fetched[0].internal_date == dt.datetime(2024, 1, 1, 10, 0, tzinfo=dt.UTC)
    assert fetched[0].extra["changekey"]
    assert all(f.folder == "Inbox" for f in fetched)


def test_fetch_skips_vanished_messages(backend, ews_mailbox):
    keep = ews_mailbox.add_message("Inbox", make_message("keep"))
    gone = ews_mailbox.add_message("Inbox", make_message("gone"))
    del ews_mailbox.box.items[gone.id]
    fetched = list(backend.fetch("Inbox", [gone.id, keep.id]))
    assert [f.server_id for f in fetched] == [keep.id]


# --- changes ---------------------------------------------------------------


def test_set_flags_read_and_unread(backend, ews_mailbox):
    a = ews_mailbox.add_message("Inbox", make_message("a"))
    b = ews_mailbox.add_message("Inbox", make_message("b"))
    assert backend.set_flags("Inbox", [a.id, b.id], add=[Flag.SEEN]) == 2
    assert [i.is_read for i in ews_mailbox.folder_items("Inbox")] == [True, True]
    assert backend.set_flags("Inbox", [a.id], remove=[Flag.SEEN]) == 1
    assert {i.subject: i.is_read for i in ews_mailbox.folder_items("Inbox")} == {
        "a": False,
        "b": True,
    }
    assert ews_mailbox.count("UpdateItem") == 2


def test_set_flags_flagged_round_trip(backend, ews_mailbox):
    a = ews_mailbox.add_message("Inbox", make_message("a"))
    backend.set_flags("Inbox", [a.id], add=[Flag.FLAGGED])
    assert ews_mailbox.folder_items("Inbox")[0].flag_status == 2
    assert next(backend.fetch("Inbox", [a.id])).flags == frozenset({Flag.FLAGGED})
    backend.set_flags("Inbox", [a.id], remove=[Flag.FLAGGED])
    assert ews_mailbox.folder_items("Inbox")[0].flag_status is None
    assert next(backend.fetch("Inbox", [a.id])).flags == frozenset()


def test_move_to_existing_and_created_folder(backend, ews_mailbox):
    a = ews_mailbox.add_message("Inbox", make_message("a"))
    b = ews_mailbox.add_message("Inbox", make_message("b"))
    ews_mailbox.add_folder("Archive")
    assert backend.move("Inbox", [a.id], "Archive") == 1
    assert [i.subject for i in ews_mailbox.folder_items("Archive")] == ["a"]
    with pytest.raises(FolderNotFound):
        backend.move("Inbox", [b.id], "Inbox/Later")
    assert backend.move("Inbox", [b.id], "Inbox/Later", create=True) == 1
    assert [i.subject for i in ews_mailbox.folder_items("Inbox/Later")] == ["b"]
    assert ews_mailbox.folder_items("Inbox") == []
    assert "CreateFolder" in ews_mailbox.requests


def test_copy_keeps_the_original(backend, ews_mailbox):
    raw = make_message("a")
    a = ews_mailbox.add_message("Inbox", raw)
    assert backend.copy("Inbox", [a.id], "Copies", create=True) == 1
    assert [i.mime for i in ews_mailbox.folder_items("Inbox")] == [raw]
    assert [i.mime for i in ews_mailbox.folder_items("Copies")] == [raw]


def test_delete_moves_to_deleted_items(backend, ews_mailbox):
    a = ews_mailbox.add_message("Inbox", make_message("a"))
    ews_mailbox.add_message("Inbox", make_message("b"))
    assert backend.delete("Inbox", [a.id]) == 1
    assert [i.subject for i in ews_mailbox.folder_items("Inbox")] == ["b"]
    assert [i.subject for i in ews_mailbox.folder_items("Deleted Items")] == ["a"]


def test_changes_count_only_existing_messages(backend, ews_mailbox):
    a = ews_mailbox.add_message("Inbox", make_message("a"))
    gone = ews_mailbox.add_message("Inbox", make_message("gone"))
    del ews_mailbox.box.items[gone.id]
    assert backend.set_flags("Inbox", [a.id, gone.id], add=[Flag.SEEN]) == 1
    assert backend.delete("Inbox", [gone.id]) == 0


# --- sending ---------------------------------------------------------------


def test_send_records_the_message_and_a_sent_copy(backend, ews_mailbox):
    raw = make_message("Hi Bob", sender="alice@example.test", to="Bob <bob@example.test>")
    result = backend.send(
        raw, sender="alice@example.test", recipients=["bob@example.test", "eve@example.test"]
    )
    assert result.accepted == ("bob@example.test", "eve@example.test")
    assert result.refused == {}
    [sent] = ews_mailbox.sent
    assert sent.mime == raw
    assert sent.disposition == "SendAndSaveCopy"
    assert sorted(sent.recipients) == ["bob@example.test", "eve@example.test"]
    assert [i.mime for i in ews_mailbox.folder_items("Sent Items")] == [raw]
