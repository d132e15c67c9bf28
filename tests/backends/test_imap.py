"""IMAPBackend against a real Dovecot on loopback.

alice owns the mailbox every test arranges (``alice_mailbox`` empties it
first); bob exists only to prove a wrong password is refused for a real user.
"""

from __future__ import annotations

import datetime as dt
import time

import pytest

from mailsessions.backends.base import (
    AuthenticationFailed,
    ConnectionFailed,
    Flag,
    FolderNotFound,
    SearchCriteria,
    Security,
    TLSFailed,
)
from mailsessions.backends.imap import IMAPBackend, _uid_set
from tests.servers.dovecot import free_port, make_message, silent_listener

pytestmark = pytest.mark.timeout(60)

SEEN = "\\Seen"
FLAGGED = "\\Flagged"


def utc(y: int, m: int, d: int) -> dt.datetime:
    return dt.datetime(y, m, d, 12, tzinfo=dt.UTC)


def backend(server, security=Security.SSL, **kw) -> IMAPBackend:
    return IMAPBackend(server.config_for("alice", "imap", security, **kw))


# --- connecting -------------------------------------------------------------


@pytest.mark.parametrize("security", list(Security))
def test_connects_and_logs_in_with_each_security(dovecot, security):
    with backend(dovecot, security) as imap:
        assert "ready" in imap.greeting.lower()
        assert "IMAP4REV1" in imap.capabilities
        assert "INBOX" in imap.list_folders()
        if security == Security.NONE:
            assert imap.tls is None
        else:
            assert imap.tls.version.startswith("TLS")
            assert imap.tls.verified is False
            assert "localhost" in imap.tls.subject


def test_wrong_password_names_the_user_and_hides_the_password(dovecot):
    config = dovecot.config_for("bob", "imap", Security.SSL, password="not-bobs-password")
    with pytest.raises(AuthenticationFailed) as caught:
        IMAPBackend(config).__enter__()
    assert str(caught.value) == "authentication failed for user bob"
    assert "not-bobs-password" not in str(caught.value)
    assert caught.value.retryable is False


def test_non_ascii_passwords_log_in_with_sasl_plain(dovecot):
    dovecot.add_user("juergen", "pässwörd-ß")
    config = dovecot.config_for("juergen", "imap", Security.SSL)
    with IMAPBackend(config) as imap:
        assert "INBOX" in imap.list_folders()
    with pytest.raises(AuthenticationFailed, match="for user juergen"):
        IMAPBackend(dovecot.config_for("juergen", "imap", password="pässwort")).open()


def test_connection_refused(dovecot):
    config = dovecot.config_for("alice", "imap", Security.SSL, port=free_port())
    with pytest.raises(ConnectionFailed, match="connection refused by 127.0.0.1:") as caught:
        IMAPBackend(config).open()
    assert caught.value.retryable is True


@pytest.mark.parametrize("security", [Security.SSL, Security.STARTTLS])
def test_a_listener_that_never_answers_times_out(dovecot, security):
    with silent_listener() as port:
        config = dovecot.config_for("alice", "imap", security, port=port, timeout=1)
        started = time.monotonic()
        with pytest.raises(ConnectionFailed, match=f"nothing answers on port {port} .* within 1 s"):
            with IMAPBackend(config):
                pass
    assert time.monotonic() - started < 5


def test_unresolvable_host(dovecot):
    config = dovecot.config_for("alice", "imap", Security.SSL, host="nonexistent.invalid")
    with pytest.raises(ConnectionFailed, match="the name nonexistent.invalid does not resolve"):
        IMAPBackend(config).open()


def test_starttls_against_the_implicit_tls_port_suggests_ssl(dovecot):
    config = dovecot.config_for(
        "alice", "imap", Security.STARTTLS, port=dovecot.imaps_port, timeout=1
    )
    with pytest.raises(ConnectionFailed, match="choose SSL"):
        with IMAPBackend(config):
            pass


def test_ssl_against_the_plain_port_suggests_starttls(dovecot):
    config = dovecot.config_for("alice", "imap", Security.SSL, port=dovecot.imap_port)
    with pytest.raises(TLSFailed, match="choose STARTTLS") as caught:
        with IMAPBackend(config):
            pass
    assert caught.value.retryable is False


@pytest.mark.parametrize("security", [Security.SSL, Security.STARTTLS])
def test_verification_refuses_the_self_signed_certificate(dovecot, security):
    with pytest.raises(TLSFailed, match="self-signed") as caught:
        with backend(dovecot, security, verify_certificate=True):
            pass
    assert caught.value.retryable is False


def test_verification_passes_when_the_certificate_is_trusted(dovecot, monkeypatch):
    # ssl.create_default_context() honours SSL_CERT_FILE: trust our test CA.
    monkeypatch.setenv("SSL_CERT_FILE", str(dovecot.cert_path))
    with backend(dovecot, Security.SSL, verify_certificate=True) as imap:
        assert imap.tls.verified is True
        assert imap.tls.subject == "CN=localhost"


def test_server_dropping_the_connection_mid_session(alice_mailbox):
    alice_mailbox.append("alice", "INBOX", make_message())
    with backend(alice_mailbox) as imap:
        imap.folder_info("INBOX")
        alice_mailbox.kick("alice")
        with pytest.raises(ConnectionFailed, match="closed the connection") as caught:
            imap.search("INBOX", SearchCriteria())
    assert caught.value.retryable is True


# --- reading ------------------------------------------------------------------


@pytest.fixture
def seeded(alice_mailbox):
    """Four messages in alice's INBOX; returns short name -> UID (as text).

    invoice: from carol to bob, seen, arrived 2024-01-10
    lunch:   from dave, 20 kB, unseen, arrived 2024-03-05
    reply:   from carol, flagged and unseen, arrived 2024-06-01
    koeln:   non-ASCII subject, seen, arrived 2024-07-01
    """
    messages = {
        "invoice": (
            make_message("Invoice 42", sender="Carol <carol@example.org>", to="bob@example.org"),
            [SEEN],
            utc(2024, 1, 10),
        ),
        "lunch": (
            make_message("Lunch plans", sender="dave@example.net", body="x" * 20_000 + "\n"),
            [],
            utc(2024, 3, 5),
        ),
        "reply": (
            make_message("Re: Invoice 42", sender="carol@example.org"),
            [FLAGGED],
            utc(2024, 6, 1),
        ),
        "koeln": (
            make_message("Grüße aus Köln", sender="erik@example.de"),
            [SEEN],
            utc(2024, 7, 1),
        ),
    }
    uids = alice_mailbox.append_many("alice", "INBOX", list(messages.values()))
    return dict(zip(messages, (str(u) for u in uids), strict=True))


@pytest.mark.parametrize(
    ("criteria", "expected"),
    [
        (SearchCriteria(), ["invoice", "lunch", "reply", "koeln"]),
        (SearchCriteria(unseen_only=True), ["lunch", "reply"]),
        (SearchCriteria(from_contains="carol"), ["invoice", "reply"]),
        (SearchCriteria(to_contains="bob@"), ["invoice"]),
        (SearchCriteria(subject_contains="invoice"), ["invoice", "reply"]),
        (SearchCriteria(subject_contains="Grüße"), ["koeln"]),
        (SearchCriteria(since=dt.date(2024, 3, 5)), ["lunch", "reply", "koeln"]),
        (SearchCriteria(before=dt.date(2024, 3, 5)), ["invoice"]),
        (SearchCriteria(larger_than=10_000), ["lunch"]),
        (SearchCriteria(from_contains="carol", unseen_only=True), ["reply"]),
    ],
    ids=[
        "all",
        "unseen",
        "from",
        "to",
        "subject",
        "subject-utf8",
        "since",
        "before",
        "larger",
        "from-and-unseen",
    ],
)
def test_search_criteria_select_exactly_the_right_messages(
    alice_mailbox, seeded, criteria, expected
):
    with backend(alice_mailbox) as imap:
        assert imap.search("INBOX", criteria) == [seeded[name] for name in expected]


def test_search_order_limit_and_exclusions(alice_mailbox, seeded):
    ids = [seeded[n] for n in ("invoice", "lunch", "reply", "koeln")]
    with backend(alice_mailbox) as imap:
        assert imap.search("INBOX", SearchCriteria(), newest_first=True) == ids[::-1]
        assert imap.search("INBOX", SearchCriteria(), limit=2) == ids[:2]
        assert imap.search("INBOX", SearchCriteria(), newest_first=True, limit=1) == ids[-1:]
        excluded = SearchCriteria(exclude_ids=frozenset(ids[:3]))
        assert imap.search("INBOX", excluded) == ids[3:]
        # The limit counts what is left after the exclusions.
        assert imap.search("INBOX", SearchCriteria(exclude_ids=frozenset(ids[:1])), limit=1) == [
            ids[1]
        ]


def test_incremental_search_with_min_uid(alice_mailbox, seeded):
    last = max(int(uid) for uid in seeded.values())
    with backend(alice_mailbox) as imap:
        # "N:*" with N past the end would still return the last message.
        assert imap.search("INBOX", SearchCriteria(min_uid=last + 1)) == []
        assert imap.search("INBOX", SearchCriteria(min_uid=last)) == [str(last)]
    new = alice_mailbox.append("alice", "INBOX", make_message("New"))
    with backend(alice_mailbox) as imap:
        assert imap.search("INBOX", SearchCriteria(min_uid=last + 1)) == [str(new)]
        info = imap.folder_info("INBOX")
    assert info.uidnext == new + 1


def test_search_in_a_missing_folder(alice_mailbox):
    with backend(alice_mailbox) as imap:
        with pytest.raises(FolderNotFound, match="'Nowhere' does not exist"):
            imap.search("Nowhere", SearchCriteria())


def test_folder_info(alice_mailbox, seeded):
    with backend(alice_mailbox) as imap:
        info = imap.folder_info("INBOX")
        assert (info.name, info.message_count, info.unseen_count) == ("INBOX", 4, 2)
        assert info.uidvalidity and info.uidnext == int(seeded["koeln"]) + 1
        with pytest.raises(FolderNotFound):
            imap.folder_info("Missing")


def test_fetch_in_batches_returns_the_exact_bytes_without_marking_seen(alice_mailbox):
    raws = [make_message(f"Message {i}", body=f"Body {i}\n.leading dot\n") for i in range(5)]
    uids = alice_mailbox.append_many("alice", "INBOX", raws)
    with backend(alice_mailbox) as imap:
        imap.batch_size = 2
        info = imap.folder_info("INBOX")
        # A vanished id is skipped, and the order asked for is kept.
        wanted = [str(u) for u in reversed(uids)] + ["999999"]
        fetched = list(imap.fetch("INBOX", wanted))
    assert [m.server_id for m in fetched] == [str(u) for u in reversed(uids)]
    assert [m.raw for m in fetched] == raws[::-1]
    for message in fetched:
        assert message.folder == "INBOX"
        assert message.flags == frozenset()
        assert message.size == len(message.raw)
        assert message.uidvalidity == info.uidvalidity
        assert message.internal_date.tzinfo is not None
    assert all(SEEN not in m.flags for m in alice_mailbox.folder_messages("alice", "INBOX"))


def test_fetch_reports_flags(alice_mailbox, seeded):
    with backend(alice_mailbox) as imap:
        fetched = {m.server_id: m for m in imap.fetch("INBOX", list(seeded.values()))}
    assert fetched[seeded["invoice"]].flags == {Flag.SEEN}
    assert fetched[seeded["reply"]].flags == {Flag.FLAGGED}
    assert fetched[seeded["lunch"]].flags == frozenset()


# --- changing -----------------------------------------------------------------


def flags_by_uid(server, folder="INBOX"):
    return {str(m.uid): m.flags for m in server.folder_messages("alice", folder)}


def test_set_flags(alice_mailbox, seeded):
    lunch, reply = seeded["lunch"], seeded["reply"]
    with backend(alice_mailbox) as imap:
        changed = imap.set_flags("INBOX", [lunch, reply, "999999"], add=[Flag.SEEN, Flag.FLAGGED])
        assert changed == 2
    flags = flags_by_uid(alice_mailbox)
    assert flags[lunch] == flags[reply] == {SEEN, FLAGGED}
    assert flags[seeded["invoice"]] == {SEEN}
    with backend(alice_mailbox) as imap:
        assert imap.set_flags("INBOX", [reply], remove=[Flag.FLAGGED]) == 1
    assert flags_by_uid(alice_mailbox)[reply] == {SEEN}


def test_move_to_an_existing_folder(alice_mailbox, seeded):
    alice_mailbox.append("alice", "Archive", make_message("Already there"))
    with backend(alice_mailbox) as imap:
        assert "MOVE" in imap.capabilities
        assert imap.move("INBOX", [seeded["invoice"], seeded["reply"]], "Archive") == 2
    inbox = alice_mailbox.folder_messages("alice", "INBOX")
    archive = alice_mailbox.folder_messages("alice", "Archive")
    assert sorted(str(m.uid) for m in inbox) == sorted([seeded["lunch"], seeded["koeln"]])
    assert len(archive) == 3
    # Flags travel with the message.
    assert {SEEN} in [m.flags for m in archive] and {FLAGGED} in [m.flags for m in archive]


def test_move_to_a_missing_folder_without_create_changes_nothing(alice_mailbox, seeded):
    with backend(alice_mailbox) as imap:
        with pytest.raises(FolderNotFound, match="'Projects' does not exist"):
            imap.move("INBOX", [seeded["invoice"]], "Projects")
    assert "Projects" not in alice_mailbox.folders("alice")
    assert len(alice_mailbox.folder_messages("alice", "INBOX")) == 4


def test_move_with_create_makes_a_nested_non_ascii_folder(alice_mailbox, seeded):
    target = "Archiv/Grüße"
    with backend(alice_mailbox) as imap:
        assert imap.move("INBOX", [seeded["koeln"]], target, create=True) == 1
        assert target in imap.list_folders()
    assert len(alice_mailbox.folder_messages("alice", target)) == 1
    assert seeded["koeln"] not in flags_by_uid(alice_mailbox)
    assert len(alice_mailbox.folder_messages("alice", "INBOX")) == 3


@pytest.mark.parametrize("uidplus", [True, False])
def test_move_without_the_move_capability_copies_and_expunges(alice_mailbox, seeded, uidplus):
    with backend(alice_mailbox) as imap:
        # Pretend the server never advertised MOVE (and maybe UIDPLUS).
        imap.capabilities = tuple(
            c for c in imap.capabilities if c != "MOVE" and (uidplus or c != "UIDPLUS")
        )
        assert imap.move("INBOX", [seeded["lunch"]], "Later", create=True) == 1
    assert len(alice_mailbox.folder_messages("alice", "Later")) == 1
    assert seeded["lunch"] not in flags_by_uid(alice_mailbox)
    assert len(alice_mailbox.folder_messages("alice", "INBOX")) == 3


def test_copy(alice_mailbox, seeded):
    with backend(alice_mailbox) as imap:
        with pytest.raises(FolderNotFound):
            imap.copy("INBOX", [seeded["invoice"]], "Copies")
        assert imap.copy("INBOX", [seeded["invoice"], "999999"], "Copies", create=True) == 1
    copies = alice_mailbox.folder_messages("alice", "Copies")
    inbox = alice_mailbox.folder_messages("alice", "INBOX")
    assert len(inbox) == 4
    assert [m.raw for m in copies] == [m.raw for m in inbox if str(m.uid) == seeded["invoice"]]


def test_delete(alice_mailbox, seeded):
    with backend(alice_mailbox) as imap:
        assert imap.delete("INBOX", [seeded["invoice"], seeded["koeln"], "999999"]) == 2
        assert imap.search("INBOX", SearchCriteria()) == [seeded["lunch"], seeded["reply"]]
    assert sorted(flags_by_uid(alice_mailbox)) == sorted([seeded["lunch"], seeded["reply"]])


def test_uid_sets_are_compact():
    assert _uid_set([7, 1, 2, 3, 9, 10]) == "1:3,7,9:10"
